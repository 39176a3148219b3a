"""The Dagster code location: graph snapshot, whole-graph runs, schedule, sensors, checks."""

import json
import os
import subprocess
import sys
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
from dagster_duckdb import DuckDBResource

from levibot_pipelines.adapters.home import warehouse_path
from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.adapters.sources import SyntheticSource
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.synthetic import simulate_bars
from levibot_pipelines.definitions import freshness_policies, load_definitions
from levibot_pipelines.defs.common import MARKDOWN_INLINE_LIMIT
from levibot_pipelines.defs.market import build_market_assets
from levibot_pipelines.defs.market_checks import build_market_checks
from levibot_pipelines.defs.models import MODEL_ASSETS
from levibot_pipelines.defs.resources import AlertResource, MarketDataResource, TradingResource
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.ingest import ingest_symbol
from levibot_pipelines_tests.conftest import SYMBOLS, TF_MS, recent_start
from levibot_pipelines_tests.fake_exchange import FakeBinance

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
    assert schedule.cron_schedule == "*/15 * * * *"  # at each 15m close
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_features_rebuilt_once_per_tick_after_all_symbols(defs, env, tmp_path):
    sensor = defs.resolve_sensor_def("features_after_ingest")
    ingest, features = defs.resolve_job_def("ingest_job"), defs.resolve_job_def("features_job")
    # The sensor reads only which symbols have trained models from this home: none, then all.
    models_home = Settings.from_env({**env, "LEVIBOT_HOME": str(tmp_path)})
    market = MarketDataResource(models_home)
    with dg.instance_for_test() as inst:

        def tick():
            context = dg.build_sensor_context(
                instance=inst, definitions=defs, resources={"market": market}
            )
            return sensor.evaluate_tick(context)

        assert (
            "waiting for a new ingest of ['BTCUSDT', 'ETHUSDT', 'SOLUSDT']" in tick().skip_message
        )
        for symbol in SYMBOLS[:2]:
            ingest.execute_in_process(partition_key=symbol, instance=inst)
        assert "waiting for a new ingest of ['SOLUSDT']" in tick().skip_message
        ingest.execute_in_process(partition_key="SOLUSDT", instance=inst)
        first = tick().run_requests
        assert len(first) == 1 and first[0].job_name == "features_job"  # no models: no publish
        assert tick().run_requests[0].run_key == first[0].run_key  # same tick, same key
        features.execute_in_process(instance=inst)
        assert tick().skip_message is not None and not tick().run_requests
        for symbol in SYMBOLS:
            ingest.execute_in_process(partition_key=symbol, instance=inst)
        for symbol in SYMBOLS:  # every symbol trained: the rebuild and the publish in one run
            (tmp_path / "models" / symbol).mkdir(parents=True)
            (tmp_path / "models" / symbol / "ensemble.json").write_text("{}")
        second = tick().run_requests
        assert len(second) == 1 and second[0].run_key != first[0].run_key
        assert second[0].job_name == "features_publish_job"


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
    """A permanent error (a corrupt stored file) is not retried."""
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


def test_an_exchange_outage_costs_one_tick_a_bounded_number_of_attempts(tmp_path):
    """The ccxt source owns retries; ``ohlcv`` has no RetryPolicy on top. With
    LEVIBOT_SOURCE_RETRY_SECONDS=1.2 and the default backoff (0.5 s, then 1 s) the second retry
    would end past the budget: one tick of one symbol makes 2 kline requests, never retried by
    Dagster (before: up to 6 x 4 = 24)."""
    start = datetime.now(UTC) - timedelta(days=2)
    start_ms = int(start.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
    bars = simulate_bars("BTCUSDT", start_ms, start_ms + 100 * TF_MS, TF_MS, seed=7)
    with FakeBinance({"BTCUSDT": bars}) as exchange:
        exchange.fail_from = 0
        settings = Settings.from_env(
            {
                "LEVIBOT_HOME": str(tmp_path),
                "LEVIBOT_START": start.date().isoformat(),
                "LEVIBOT_SOURCE": "ccxt",
                "LEVIBOT_EXCHANGE_API_URL": exchange.api_url,
                "LEVIBOT_SOURCE_RETRY_SECONDS": "1.2",
            }
        )
        ohlcv_defs = [a for a in build_market_assets(settings) if dg.AssetKey("ohlcv") in a.keys]
        assert all(a.op.retry_policy is None for a in ohlcv_defs)
        result = dg.materialize(
            ohlcv_defs,
            partition_key="BTCUSDT",
            resources={"market": MarketDataResource(settings)},
            raise_on_error=False,
        )
    assert not result.success
    assert len(exchange.kline_requests) == 2
    events = [e.event_type for e in result.all_events]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in events
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "injected outage" in failure.step_failure_data.error.to_string()


def test_loading_the_definitions_emits_no_preview_warning(env):
    """Every process that loads the code location (webserver, daemon, each run) once repeated a
    PreviewWarning of ``Definitions.map_asset_specs``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_definitions()
        loaded.resolve_asset_graph()
        loaded.get_repository_def()
    flagged = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, dg.PreviewWarning | dg.BetaWarning)
    ]
    assert flagged == []


def _windows(policy: dg.FreshnessPolicy) -> tuple[timedelta, timedelta]:
    return policy.warn_window.to_timedelta(), policy.fail_window.to_timedelta()


def test_freshness_policies_have_the_documented_windows(defs):
    """Defaults (15m bars, ingest every 15 minutes, daily retraining): ``ohlcv`` warns after
    15 + 15 = 30 and fails after 2 x 15 + 15 = 45 minutes; the model assets warn after 1.5 and
    fail after 2 retrain periods (36 h, 48 h); features and predictions 30 / 60 minutes."""
    graph = defs.resolve_asset_graph()

    def windows(name: str) -> tuple[timedelta, timedelta]:
        return _windows(graph.get(dg.AssetKey(name)).freshness_policy)

    minutes, hours = (lambda n: timedelta(minutes=n)), (lambda n: timedelta(hours=n))
    assert windows("ohlcv") == (minutes(30), minutes(45))
    assert (
        windows("cross_asset_features")
        == windows("latest_predictions")
        == (
            minutes(30),
            minutes(60),
        )
    )
    assert set(MODEL_ASSETS) == {"lgbm_model", "deep_tfm_model", "ensemble_weights", "model_report"}
    for name in MODEL_ASSETS:
        assert windows(name) == (hours(36), hours(48)), name


def test_freshness_windows_follow_the_settings(tmp_path):
    """1h bars ingested hourly: 1 + 1 = 2 h / 2 x 1 + 1 = 3 h; retraining weekly: 10.5 / 14
    days."""
    settings = Settings.from_env(
        {
            "LEVIBOT_HOME": str(tmp_path),
            "LEVIBOT_TIMEFRAME": "1h",
            "LEVIBOT_INGEST_CRON": "2 * * * *",
            "LEVIBOT_RETRAIN_CRON": "0 3 * * 1",
        }
    )
    policies = freshness_policies(settings)
    assert _windows(policies[dg.AssetKey("ohlcv")]) == (timedelta(hours=2), timedelta(hours=3))
    assert _windows(policies[dg.AssetKey("lgbm_model")]) == (
        timedelta(days=10.5),
        timedelta(days=14),
    )


def test_model_report_shows_its_plots_inline(defs, instance, env, tmp_path):
    """The Dagster UI shows Markdown metadata under 1000 characters inline and longer Markdown
    (an embedded PNG) behind "[Show Markdown]": the plots are short Markdown images served by
    the MLflow UI (its /get-artifact route for the report run), the PNG files are linked, and
    a short backtest table is inline too."""
    for symbol in SYMBOLS:
        defs.resolve_job_def("ingest_job").execute_in_process(
            partition_key=symbol, instance=instance
        )
    defs.resolve_job_def("features_job").execute_in_process(instance=instance)
    result = defs.resolve_job_def("training_job").execute_in_process(
        partition_key="SOLUSDT", instance=instance
    )
    meta = {
        node: {
            k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()
        }
        for node in ("model_report", "lgbm_model")
    }
    report = meta["model_report"]
    run_id = report["mlflow_run"].rpartition("/runs/")[2]
    for key in ("plots", "backtest_summary", "metrics"):
        assert len(report[key]) < MARKDOWN_INLINE_LIMIT, key
    assert report["plots"].split("\n\n") == [
        f"![{name}](http://127.0.0.1:5000/get-artifact?path=plots/{name}.png&run_uuid={run_id})"
        for name in ("reliability_ensemble", "risk_coverage", "equity", "drawdown")
    ]
    plots = Path(report["plot_files"])
    names = {p.name for p in plots.glob("SOLUSDT_*.png")}
    assert {"SOLUSDT_equity.png", "SOLUSDT_drawdown.png", "SOLUSDT_risk_coverage.png"} <= names
    assert report["backtest_summary"].splitlines()[2].startswith("| policy (ensemble) | ")
    # The decision engine's verdict, as a line of its own and atop its fold table.
    assert report["verdict"].startswith(("no validated edge after costs", "edge after costs in"))
    assert report["decision"].startswith(f"**Verdict: {report['verdict']}.**")
    assert len(report["equity"]) > MARKDOWN_INLINE_LIMIT  # the embedded copy, collapsed
    lgbm = meta["lgbm_model"]
    lgbm_run = lgbm["mlflow_run"].rpartition("/runs/")[2]
    assert lgbm["reliability_plot"] == (
        "![reliability](http://127.0.0.1:5000/get-artifact?"
        f"path=plots/reliability.png&run_uuid={lgbm_run})"
    )
    client = mlflow.MlflowClient(
        tracking_uri=f"sqlite:///{Path(env['LEVIBOT_HOME']) / 'mlflow.db'}"
    )
    for run, path in ((run_id, "plots/equity.png"), (lgbm_run, "plots/reliability.png")):
        assert Path(client.download_artifacts(run, path, dst_path=str(tmp_path))).stat().st_size


def test_loading_the_code_location_imports_no_training_library(env):
    """Every run worker imports the whole code location before its first step: an ingest or a
    publish run must not pay for torch, LightGBM, MLflow or matplotlib at start (the steps that
    need them import them)."""
    code = (
        "import sys\n"
        "from levibot_pipelines.definitions import load_definitions\n"
        "load_definitions()\n"
        "heavy = ('torch', 'lightgbm', 'mlflow', 'matplotlib', 'sklearn')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True
    )
    assert out.stdout.strip() == ""
