"""Shared fixtures: the real candles from ../shared/data, synthetic bars, a fake exchange."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from levibot_pipelines.core.data.synthetic import simulate_bars
from levibot_pipelines.core.data.validation import validate_ohlcv

TF_MS = 900_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
SHARED_DATA = Path(
    os.environ.get("LEVIBOT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
OHLCV_DIR = SHARED_DATA / "ohlcv"


def pytest_collection_modifyitems(config, items):
    if (OHLCV_DIR / "BTCUSDT-15m.parquet").exists():
        return
    skip = pytest.mark.skip(reason=f"real candles not found in {OHLCV_DIR} (../shared/data)")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_candles() -> dict[str, pl.DataFrame]:
    return {s: pl.read_parquet(OHLCV_DIR / f"{s}-15m.parquet") for s in SYMBOLS}


def synthetic_long(n: int, start_ms: int = 0, seed: int = 7) -> pl.DataFrame:
    """Validated long-format synthetic bars for the three symbols."""
    frames = []
    for s in SYMBOLS:
        raw = simulate_bars(s, start_ms, start_ms + (n - 1) * TF_MS, TF_MS, seed=seed)
        frames.append(validate_ohlcv(raw, symbol=s, source="synthetic", tf_ms=TF_MS).bars)
    return pl.concat(frames)


@pytest.fixture(scope="session")
def synthetic_bars() -> pl.DataFrame:
    return synthetic_long(1500)


def recent_start(days: int = 5) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).date().isoformat()


# Tiny, fast settings for the whole code location: 20 days of synthetic bars, a small
# walk-forward layout, one epoch, a few MC samples.
SESSION_ENV = {
    "LEVIBOT_SOURCE": "synthetic",
    "LEVIBOT_PROFILE": "small",
    "LEVIBOT_WALK": "600,150,150,200",
    "LEVIBOT_PURGE": "40",
    "LEVIBOT_EPOCHS": "1",
    "LEVIBOT_MC_SAMPLES": "5",
    "LEVIBOT_REPORT_FOLDS": "1",
    # fp32 whatever the CPU: `auto` picks bf16 where a load-sensitive probe says so, and tests
    # compare predictions of a trained model with the same model loaded elsewhere (fp32).
    "LEVIBOT_PRECISION": "fp32",
}


@contextmanager
def levibot_environment(values: dict[str, str]) -> Iterator[dict[str, str]]:
    """For the block, every ``LEVIBOT_*`` variable is replaced by ``values`` (yielded), with
    MLflow's telemetry and progress bars off; the previous environment comes back after it."""
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("LEVIBOT_")]:
            mp.delenv(k)
        for k, v in values.items():
            mp.setenv(k, v)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        yield values


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("levibot_home")
    values = {"LEVIBOT_HOME": str(home), "LEVIBOT_START": recent_start(20), **SESSION_ENV}
    with levibot_environment(values):
        yield values


@pytest.fixture(scope="session")
def defs(env) -> dg.Definitions:
    """The whole code location, loaded once per test session."""
    from levibot_pipelines.definitions import load_definitions

    return load_definitions()


@pytest.fixture(scope="session")
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="module")
def reader(tracker):
    """An independent MLflow client on the store of the module's ``tracker`` fixture, to read
    back what the tracker wrote."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracker.tracking_uri)


def dummy_run(tracker, name: str, payload: str = "weights"):
    """A logged training run with one small artifact, for registry and promotion tests."""
    return tracker.log_training_run(
        run_name=name, params={"seed": 1}, metrics={}, files={"model/weights.txt": payload}
    )
