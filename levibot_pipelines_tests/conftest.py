"""Shared fixtures: the real candles from ../shared/data, synthetic bars, a fake exchange."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from levibot_pipelines.core.synthetic import simulate_bars
from levibot_pipelines.core.validation import validate_ohlcv

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
