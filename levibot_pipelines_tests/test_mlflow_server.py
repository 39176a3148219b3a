"""A real MLflow tracking server with proxied artifacts (``mlflow server --serve-artifacts``):
models trained on one host load, by the ``champion`` alias, on another host that has none of the
first host's files. And the one decision behind it, ``experiment_artifact_location``, both ways.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Telemetry must be off before mlflow is first imported (it starts its client on import).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import dagster as dg  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from levibot_pipelines.adapters.exported_model import exported_version  # noqa: E402
from levibot_pipelines.adapters.home import ensemble_weights_path, predictions_path  # noqa: E402
from levibot_pipelines.adapters.prediction_files import MC_SEED  # noqa: E402
from levibot_pipelines.adapters.registry import load_lgbm, load_transformer, model_name  # noqa: E402
from levibot_pipelines.adapters.store import ParquetStore, write_text_atomic  # noqa: E402
from levibot_pipelines.adapters.tracking import (  # noqa: E402
    LocalArtifactsOnServerError,
    Tracker,
    experiment_artifact_location,
    is_tracking_server,
)
from levibot_pipelines.core.data.features import FEATURE_COLUMNS  # noqa: E402
from levibot_pipelines.core.evaluation.symbol_data import symbol_data  # noqa: E402
from levibot_pipelines.core.models.inference import lgbm_outputs, transformer_outputs  # noqa: E402
from levibot_pipelines.defs.resources import ModelResource  # noqa: E402
from levibot_pipelines.settings import ModelSettings, Settings  # noqa: E402
from levibot_pipelines.usecases.publish import publish_latest  # noqa: E402
from levibot_pipelines.usecases.train import newest_layout  # noqa: E402
from levibot_pipelines_tests.conftest import SESSION_ENV, SYMBOLS, recent_start  # noqa: E402

SYMBOL = "BTCUSDT"
UI = ModelSettings().mlflow_ui


# --- the decision, both ways (fast) -------------------------------------------------------------


def test_local_store_keeps_the_local_artifact_root(tmp_path: Path) -> None:
    root = tmp_path / "mlartifacts"
    sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert not is_tracking_server(sqlite)
    assert experiment_artifact_location(sqlite, root) == f"file://{root.resolve()}"
    # A direct database URL is opened in process too: artifacts stay local, as before.
    assert experiment_artifact_location("postgresql://u@db/mlflow", root) == root.resolve().as_uri()
    assert (
        experiment_artifact_location(f"file://{tmp_path}/mlruns", root)
        == f"file://{root.resolve()}"
    )
    assert experiment_artifact_location(sqlite, None) is None


def test_tracking_server_decides_its_artifact_location(tmp_path: Path) -> None:
    for url in ("http://mlflow:5000", "https://mlflow.example.com/", "HTTP://127.0.0.1:5000"):
        assert is_tracking_server(url)
        assert experiment_artifact_location(url, tmp_path / "mlartifacts") is None


# --- a real server --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def mlflow_server(tmp: Path, timeout: float = 60.0) -> Iterator[str]:
    """``mlflow server`` of the venv on a free port, sqlite backend under ``tmp`` and proxied
    artifacts under ``tmp/server_artifacts``; yields its URL. Started in its own process group,
    which is killed at the end."""
    port = _free_port()
    cmd = [
        str(Path(sys.prefix) / "bin" / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp / 'server.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(tmp / "server_artifacts"),
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    url = f"http://127.0.0.1:{port}"
    with open(tmp / "server.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"mlflow server did not come up: {(tmp / 'server.log').read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL when it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _use_home(mp: pytest.MonkeyPatch, home: Path, tracking_uri: str) -> Settings:
    """Point the LEVIBOT_* environment at ``home`` (the session's tiny settings) and the server."""
    for key in [k for k in os.environ if k.startswith("LEVIBOT_")]:
        mp.delenv(key)
    values = {
        "LEVIBOT_HOME": str(home),
        "LEVIBOT_START": recent_start(20),
        "LEVIBOT_MLFLOW_TRACKING_URI": tracking_uri,
        **SESSION_ENV,
    }
    for key, value in values.items():
        mp.setenv(key, value)
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return Settings.from_env()


def _train_on_host_a(home: Path) -> None:
    """What a training machine does: ingest, features, ``training_job`` for ``SYMBOL``."""
    from levibot_pipelines.definitions import load_definitions

    defs = load_definitions()
    with dg.instance_for_test() as instance:
        for symbol in SYMBOLS:
            job = defs.resolve_job_def("ingest_job")
            assert job.execute_in_process(partition_key=symbol, instance=instance).success
        assert defs.resolve_job_def("features_job").execute_in_process(instance=instance).success
        result = defs.resolve_job_def("training_job").execute_in_process(
            partition_key=SYMBOL, instance=instance
        )
        assert result.success


@dataclass
class HostB:
    """What the publisher on host B reads from its own home beside the registry: the symbol's
    candles, the feature table and the champions' ensemble.json (text)."""

    home: Path
    candles: pl.DataFrame
    features: pl.DataFrame
    ensemble_json: str


def publish_on_host_b(monkeypatch, host: HostB, versions: dict, booster, cal_l) -> tuple:
    """Write ``host``'s files into its home and publish ``SYMBOL`` from the registry; asserts
    that the row names the champions ``versions`` ({"lgbm": v, "deep": v}) and that its
    LightGBM p_up is ``booster``/``cal_l``'s on the newest feature row (to 1e-12). Returns the
    publisher's settings and the published row."""
    monkeypatch.setenv("LEVIBOT_SYMBOLS", SYMBOL)
    s_pub = Settings.from_env()
    ParquetStore(host.home).upsert_ohlcv(SYMBOL, host.candles)
    ParquetStore(host.home).write_features(host.features)
    write_text_atomic(host.ensemble_json, ensemble_weights_path(host.home, SYMBOL))
    report = publish_latest(s_pub, ModelResource(s_pub).tracker(), int(time.time() * 1000))
    row = report.rows.row(0, named=True)
    assert (row["lgbm_version"], row["deep_version"]) == (versions["lgbm"], versions["deep"])
    newest = host.features.filter(pl.col("symbol") == SYMBOL).sort("timestamp").tail(1)
    p_newest = lgbm_outputs(booster, cal_l, newest.select(FEATURE_COLUMNS).to_numpy())[0]
    assert row["lgbm_p_up"] == pytest.approx(float(p_newest[0]), abs=1e-12)
    return s_pub, row


@pytest.mark.slow
def test_champion_trained_on_one_host_loads_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home_a, home_b = tmp_path / "host-a", tmp_path / "host-b"
    with mlflow_server(tmp_path) as url:
        s_a = _use_home(monkeypatch, home_a, url)
        _train_on_host_a(home_a)
        # What host A computed when it trained: the test-window P(up) of each model.
        trained = {
            kind: pl.read_parquet(predictions_path(home_a, SYMBOL, kind))
            for kind in ("lgbm", "deep")
        }
        features = ParquetStore(home_a).read_features()
        ensemble_json = ensemble_weights_path(home_a, SYMBOL).read_text()
        candles = ParquetStore(home_a).read_ohlcv(SYMBOL)
        _, cfg = ModelResource(s_a).eval_config()
        # Nothing of this host is an artifact store: no mlartifacts, files on the server.
        assert not (home_a / "mlartifacts").exists()
        served = {p.name for p in (tmp_path / "server_artifacts").rglob("*") if p.is_file()}
        assert {"lgbm.txt", "state_dict.pt", "MLmodel"} <= served

        # Host B: another home, host A's files gone.
        gone = home_a.rename(tmp_path / "host-a-gone")
        s_b = _use_home(monkeypatch, home_b, url)
        tracker = ModelResource(s_b).tracker()
        data = symbol_data(features, SYMBOL)
        rows = newest_layout(data, cfg, s_b.market.timeframe_ms)
        test = rows["test"]
        for kind in ("lgbm", "deep"):
            assert np.array_equal(data.timestamps[test], trained[kind]["timestamp"].to_numpy())

        # The project's loaders, by the champion alias.
        lgbm_name, deep_name = model_name("lgbm", SYMBOL), model_name("deep", SYMBOL)
        lgbm_version, _ = tracker.champion(lgbm_name)
        deep_version, _ = tracker.champion(deep_name)
        booster, cal_l = load_lgbm(tracker, lgbm_name, lgbm_version)
        p_lgbm = lgbm_outputs(booster, cal_l, data.X[test])[0]
        np.testing.assert_allclose(p_lgbm, trained["lgbm"]["p"].to_numpy(), rtol=0, atol=1e-12)
        model, cal_d = load_transformer(tracker, deep_name, deep_version)
        deep = transformer_outputs(
            model, cal_d, data.X, test, n_samples=cfg.mc_samples, seed=cfg.seed
        )
        np.testing.assert_allclose(deep["p_up"], trained["deep"]["p"].to_numpy(), atol=1e-6)

        # Plain MLflow, by the registry alias, against the server.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        assert mlflow.get_tracking_uri() == url
        frame = pd.DataFrame(data.X, columns=list(FEATURE_COLUMNS))
        lgbm_pyfunc = mlflow.pyfunc.load_model(f"models:/{lgbm_name}@champion")
        out = lgbm_pyfunc.predict(frame.iloc[test])
        np.testing.assert_allclose(out["p_up"], trained["lgbm"]["p"].to_numpy(), atol=1e-12)
        end, window = int(test[-1]), model.config.window
        deep_pyfunc = mlflow.pyfunc.load_model(f"models:/{deep_name}@champion")
        one = deep_pyfunc.predict(frame.iloc[end - window + 1 : end + 1])
        mine = transformer_outputs(
            model, cal_d, data.X, np.array([end]), n_samples=cfg.mc_samples, seed=MC_SEED
        )
        np.testing.assert_allclose(one["p_up"].to_numpy(), mine["p_up"], atol=1e-6)

        # The publisher on host B: beyond the registry it reads the symbol's candles, the
        # feature table and the champions' ensemble.json from its own home (not MLflow's); with
        # those files it exports the deep champion it downloaded from the server, for the API.
        versions = {"lgbm": lgbm_version, "deep": deep_version}
        host_b = HostB(home_b, candles, features, ensemble_json)
        publish_on_host_b(monkeypatch, host_b, versions, booster, cal_l)
        assert exported_version(home_b, SYMBOL) == deep_version

        # No file:// path of host A in what the registry serves.
        client = MlflowClient(tracking_uri=url)
        for name, version in ((lgbm_name, lgbm_version), (deep_name, deep_version)):
            mv = client.get_model_version(name, version)
            run_uri = client.get_run(mv.run_id).info.artifact_uri
            for uri in (mv.source, run_uri):
                assert uri.startswith("mlflow-artifacts:/"), uri
                assert str(home_a) not in uri and str(gone) not in uri
        assert not (home_b / "mlartifacts").exists()

        # An experiment on the server that keeps its artifacts at a local path is refused.
        local = (tmp_path / "old-mlartifacts").as_uri()
        client.create_experiment("levibot-old", artifact_location=local)
        with pytest.raises(LocalArtifactsOnServerError, match=f"'levibot-old'.*{local}"):
            Tracker(url, home_b / "mlartifacts", "levibot-old", ui_base=UI)
    shutil.rmtree(gone, ignore_errors=True)
