"""The Dagster code location: graph snapshot, whole-graph runs, schedule, sensors, checks."""

import json
import os
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from levibot_pipelines.adapters.home import warehouse_path
from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.adapters.sources import SyntheticSource
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.defs.market import build_market_assets
from levibot_pipelines.defs.market_checks import build_market_checks
from levibot_pipelines.defs.resources import AlertResource, MarketDataResource, TradingResource
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.ingest import ingest_symbol
from levibot_pipelines_tests.conftest import SYMBOLS, TF_MS, recent_start

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"
FEATURES = dg.AssetKey("cross_asset_features")


def graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "group": node.group_name,
            "partitions": node.partitions_def.get_partition_keys() if node.partitions_def else None,
            "checks": sorted(c.name for c in node.check_keys),
            "freshness_policy": type(node.freshness_policy).__name__
            if node.freshness_policy
            else None,
            "kinds": sorted(node.kinds),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")),
        "schedules": {
            s.name: {"cron": s.cron_schedule, "job": s.job_name, "status": s.default_status.value}
            for s in defs.schedules
        },
        "sensors": {s.name: {"status": s.default_status.value} for s in defs.sensors},
    }


def test_asset_graph_snapshot(defs):
    snap = graph_snapshot(defs)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(snap, indent=2, sort_keys=True) + "\n")
    assert snap == json.loads(SNAPSHOT.read_text())


def test_whole_graph_materializes_on_synthetic_data(defs, instance, env):
    ingest, features = defs.resolve_job_def("ingest_job"), defs.resolve_job_def("features_job")
    for symbol in SYMBOLS:
        result = ingest.execute_in_process(partition_key=symbol, instance=instance)
        assert result.success
        meta = result.asset_materializations_for_node("ohlcv")[0].metadata
        assert meta["source"].value == "synthetic"
        assert meta["rows_added"].value == meta["total_rows"].value > 400
        assert meta["rejected_rows"].value == 0 and meta["gaps"].value == 0
        lag = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert lag == {"data_lag": True, "gap_report": True}
    result = features.execute_in_process(instance=instance)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert {k: checks[k] for k in ("schema_and_finite", "staleness")} == {
        "schema_and_finite": True,
        "staleness": True,
    }
    assert "feature_drift" in checks  # its verdict depends on the data; tested in test_drift
    meta = result.asset_materializations_for_node("cross_asset_features")[0].metadata
    assert meta["staleness_minutes"].value == 0.0
    table = pl.read_parquet(Path(env["LEVIBOT_HOME"]) / "features" / "cross_asset_features.parquet")
    assert meta["dagster/row_count"].value == table.height
    assert sorted(table["symbol"].unique()) == list(SYMBOLS)
    # A second tick with no new closed bar adds nothing.
    again = ingest.execute_in_process(partition_key="BTCUSDT", instance=instance)
    assert again.asset_materializations_for_node("ohlcv")[0].metadata["rows_added"].value == 0


def test_schedule_tick_requests_one_run_per_symbol(defs):
    schedule = defs.resolve_schedule_def("ingest_schedule")
    tick = datetime(2026, 11, 24, 10, 1, tzinfo=UTC)
    context = dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    )
    data = schedule.evaluate_tick(context)
    assert [(r.partition_key, r.run_key) for r in data.run_requests] == [
        (s, f"{s}@2026-11-24T10:01:00+00:00") for s in SYMBOLS
    ]
    assert schedule.cron_schedule == "1-59/15 * * * *"  # one minute after each 15m close
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_features_rebuilt_once_per_tick_after_all_symbols(defs, env):
    sensor = defs.resolve_sensor_def("features_after_ingest")
    ingest, features = defs.resolve_job_def("ingest_job"), defs.resolve_job_def("features_job")
    with dg.instance_for_test() as inst:

        def tick():
            return sensor.evaluate_tick(dg.build_sensor_context(instance=inst, definitions=defs))

        assert (
            "waiting for a new ingest of ['BTCUSDT', 'ETHUSDT', 'SOLUSDT']" in tick().skip_message
        )
        for symbol in SYMBOLS[:2]:
            ingest.execute_in_process(partition_key=symbol, instance=inst)
        assert "waiting for a new ingest of ['SOLUSDT']" in tick().skip_message
        ingest.execute_in_process(partition_key="SOLUSDT", instance=inst)
        first = tick().run_requests
        assert len(first) == 1
        assert tick().run_requests[0].run_key == first[0].run_key  # same tick, same key
        features.execute_in_process(instance=inst)
        assert tick().skip_message is not None and not tick().run_requests
        for symbol in SYMBOLS:
            ingest.execute_in_process(partition_key=symbol, instance=inst)
        second = tick().run_requests
        assert len(second) == 1 and second[0].run_key != first[0].run_key


class Webhook:
    """A real HTTP endpoint on loopback that records posted JSON bodies."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_stale_features_fail_the_check_and_fire_the_alert(defs, tmp_path):
    settings = Settings.from_env({"LEVIBOT_HOME": str(tmp_path), "LEVIBOT_START": recent_start()})
    store = ParquetStore(settings.home)
    source = SyntheticSource(start_ms=settings.market.start_ms, tf_ms=TF_MS, seed=7)
    three_hours_ago = int(time.time() * 1000) - 3 * 3_600_000
    for symbol in SYMBOLS:
        ingest_symbol(
            source,
            store,
            symbol,
            start_ms=settings.market.start_ms,
            now_ms=three_hours_ago,
            tf_ms=TF_MS,
        )
    market = MarketDataResource(settings)
    warehouse = DuckDBResource(database=str(warehouse_path(settings.home)))
    # The same asset and check builders the code location uses, bound to this stale home.
    feature_defs = [a for a in build_market_assets(settings) if FEATURES in a.keys]
    feature_checks = [
        c
        for c in build_market_checks(settings)
        if all(k.asset_key == FEATURES for k in c.check_keys)
    ]
    result = dg.materialize(
        [*feature_defs, *feature_checks], resources={"market": market, "warehouse": warehouse}
    )
    staleness = next(e for e in result.get_asset_check_evaluations() if e.check_name == "staleness")
    assert not staleness.passed
    assert staleness.severity == dg.AssetCheckSeverity.WARN
    assert 165 < staleness.metadata["staleness_minutes"].value < 200

    hook = Webhook()
    sensor = defs.resolve_sensor_def("feature_freshness_alert")
    resources = {
        "market": market,
        "alerts": AlertResource(webhook_url=hook.url),
        "trading": TradingResource(settings),
    }
    ctx = dg.build_sensor_context(definitions=defs, resources=resources)
    data = sensor.evaluate_tick(ctx)
    assert "PASS -> FAIL" in data.skip_message
    assert len(hook.posts) == 1
    post = hook.posts[0]
    assert (post["state"], post["previous_state"], post["asset"]) == (
        "FAIL",
        "PASS",
        "cross_asset_features",
    )
    assert 165 < post["staleness_minutes"] < 200
    cursor = json.loads(data.cursor)
    again = sensor.evaluate_tick(
        dg.build_sensor_context(definitions=defs, resources=resources, cursor=data.cursor)
    )
    assert len(hook.posts) == 1 and "FAIL" in again.skip_message  # no repeat for the same state
    # Past LEVIBOT_KILL_STALENESS_MINUTES (60) the sensor also halts trading, saying why.
    halted = KillSwitch(settings.home).status()
    assert halted.state == "HALTED" and "staleness" in halted.entries
    assert "min stale (limit 60)" in halted.reason()
    # Catch up: the next evaluation reports the recovery.
    for symbol in SYMBOLS:
        ingest_symbol(
            source,
            store,
            symbol,
            start_ms=settings.market.start_ms,
            now_ms=int(time.time() * 1000),
            tf_ms=TF_MS,
        )
    dg.materialize(feature_defs, resources={"market": market, "warehouse": warehouse})
    recovered = sensor.evaluate_tick(
        dg.build_sensor_context(definitions=defs, resources=resources, cursor=json.dumps(cursor))
    )
    assert "FAIL -> PASS" in recovered.skip_message
    assert [p["state"] for p in hook.posts] == ["FAIL", "PASS"]
    assert KillSwitch(settings.home).status().state == "ACTIVE"  # fresh data lifts the halt
    hook.server.shutdown()


def test_a_warehouse_locked_by_another_process_does_not_fail_the_features(tmp_path, monkeypatch):
    """The Parquet feature table is the source of truth: a DuckDB lock held by another process
    (a person's duckdb shell) leaves the views stale, says so, and the run succeeds."""
    import subprocess
    import sys

    import dagster._utils.backoff as dagster_backoff

    # DuckDBResource retries the lock ~100 s (10 exponential backoffs); not in a test.
    monkeypatch.setattr(dagster_backoff, "exponential_delay_generator", lambda: iter([0.0] * 20))
    settings = Settings.from_env({"LEVIBOT_HOME": str(tmp_path), "LEVIBOT_START": recent_start()})
    source = SyntheticSource(start_ms=settings.market.start_ms, tf_ms=TF_MS, seed=7)
    for symbol in SYMBOLS:
        ingest_symbol(
            source,
            ParquetStore(settings.home),
            symbol,
            start_ms=settings.market.start_ms,
            now_ms=int(time.time() * 1000),
            tf_ms=TF_MS,
        )
    db = warehouse_path(settings.home)
    resources = {
        "market": MarketDataResource(settings),
        "warehouse": DuckDBResource(database=str(db)),
    }
    feature_defs = [a for a in build_market_assets(settings) if FEATURES in a.keys]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys\nc = duckdb.connect({str(db)!r})\n"
            "print('locked', flush=True)\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = dg.materialize(feature_defs, resources=resources)
    finally:
        holder.communicate("", timeout=30)  # closes its stdin: it exits and releases the lock
    assert result.success
    views = result.asset_materializations_for_node("cross_asset_features")[0].metadata
    assert views["duckdb_views"].value.startswith("not refreshed: ")
    assert "Could not set lock on file" in views["duckdb_views"].value
    assert ParquetStore(settings.home).read_features().height > 0  # the table was replaced
    again = dg.materialize(feature_defs, resources=resources)
    meta = again.asset_materializations_for_node("cross_asset_features")[0].metadata
    assert meta["duckdb_views"].value == ["ohlcv", "cross_asset_features"]


def test_a_corrupt_stored_ohlcv_file_fails_once_naming_the_file(tmp_path):
    """A permanent error (a corrupt stored file) is not retried: the RetryPolicy of ``ohlcv``
    is for transient source errors."""
    settings = Settings.from_env({"LEVIBOT_HOME": str(tmp_path), "LEVIBOT_START": recent_start()})
    path = ParquetStore(settings.home).ohlcv_path("BTCUSDT")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage, not parquet")
    ohlcv_defs = [a for a in build_market_assets(settings) if dg.AssetKey("ohlcv") in a.keys]
    result = dg.materialize(
        ohlcv_defs,
        partition_key="BTCUSDT",
        resources={"market": MarketDataResource(settings)},
        raise_on_error=False,
    )
    assert not result.success
    retries = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retries == []
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    text = str(failure.step_failure_data.user_failure_data.description)
    assert str(path) in text and "move it aside and re-ingest" in text
