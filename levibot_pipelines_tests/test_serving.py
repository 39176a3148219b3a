"""End to end: the whole graph on synthetic data, the publish sensor and job, the published
files and DuckDB views, and the HTTP API serving them from a real server on loopback."""

import json
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.adapters.prediction_files import read_history, read_latest
from levibot_pipelines.api import create_app
from levibot_pipelines.defs.resources import TradingResource
from levibot_pipelines.settings import Settings
from levibot_pipelines_tests.conftest import SYMBOLS
from levibot_pipelines_tests.test_api import serving

FEATURES = dg.AssetKey("cross_asset_features")


def _tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("publish_on_features")
    trading = TradingResource(Settings.from_env())
    return sensor.evaluate_tick(
        dg.build_sensor_context(
            instance=instance, definitions=defs, cursor=cursor, resources={"trading": trading}
        )
    )


@pytest.fixture(scope="module")
def published(defs, env):
    """A fresh instance: ingest, features, the sensor waiting for models, training, one publish."""
    home = Path(env["LEVIBOT_HOME"])
    with dg.instance_for_test() as inst:
        for symbol in SYMBOLS:
            defs.resolve_job_def("ingest_job").execute_in_process(
                partition_key=symbol, instance=inst
            )
        defs.resolve_job_def("features_job").execute_in_process(instance=inst)
        waiting = None
        if any(not (home / "models" / s / "ensemble.json").exists() for s in SYMBOLS):
            waiting = _tick(defs, inst)
        for symbol in SYMBOLS:
            job = defs.resolve_job_def("training_job")
            assert job.execute_in_process(partition_key=symbol, instance=inst).success
        first = _tick(defs, inst)
        result = defs.resolve_job_def("publish_job").execute_in_process(instance=inst)
        again = _tick(defs, inst, cursor=first.cursor)
        defs.resolve_job_def("features_job").execute_in_process(instance=inst)
        same_bars = _tick(defs, inst, cursor=first.cursor)  # a rebuild without a new bar
        # As if ETH's newest bar had not been published yet: the next update publishes it.
        latest = home / "published" / "latest_predictions.json"
        original = latest.read_text()
        doc = json.loads(original)
        for row in doc["rows"]:
            if row["symbol"] == "ETHUSDT":
                row["bar_time"] -= 900_000
                row["bar_close_time"] -= 900_000
        latest.write_text(json.dumps(doc))
        defs.resolve_job_def("features_job").execute_in_process(instance=inst)
        after_update = _tick(defs, inst, cursor=same_bars.cursor)
        # The same update while a features_publish_job run (rebuild + publish) is in progress:
        # that run publishes it, so the sensor waits instead of launching a second publish.
        live = dg.DagsterRun(job_name="features_publish_job", status=dg.DagsterRunStatus.STARTED)
        inst.add_run(live)
        while_live = _tick(defs, inst, cursor=same_bars.cursor)
        inst.delete_run(live.run_id)
        latest.write_text(original)
        yield {
            "home": home,
            "waiting": waiting,
            "first": first,
            "result": result,
            "again": again,
            "same_bars": same_bars,
            "after_update": after_update,
            "while_live": while_live,
        }


def test_sensor_publishes_exactly_once_per_feature_update(published):
    if published["waiting"] is not None:  # models trained by an earlier module are reused
        assert not published["waiting"].run_requests
        assert "no trained models yet" in published["waiting"].skip_message
    first = published["first"].run_requests
    assert len(first) == 1 and first[0].job_name in (None, "publish_job")
    assert not published["again"].run_requests  # the same update is not published twice
    # A feature rebuild that brought no new bar is consumed without a publish ...
    same = published["same_bars"]
    assert not same.run_requests and "already published" in same.skip_message
    assert same.cursor != published["first"].cursor
    # ... and one whose newest bar is not published yet is published.
    second = published["after_update"].run_requests
    assert len(second) == 1 and second[0].run_key != first[0].run_key
    # Not while a features_publish_job run is still to publish it; the update is kept for later.
    waiting = published["while_live"]
    assert not waiting.run_requests and "features_publish_job run is publishing" in (
        waiting.skip_message
    )
    assert waiting.cursor == published["same_bars"].cursor


def test_publish_job_writes_one_checked_row_per_symbol(published):
    result, home = published["result"], published["home"]
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    # The publish also scores what matured (live_scores); its verdict: test_live_scores_asset.
    assert checks.pop("live_skill_within_noise_band") in (True, False)
    assert checks == {
        "every_symbol_published": True,
        "bar_time_is_newest_feature_row": True,
        "probabilities_in_range": True,
        "calibration_drift": True,  # live_recalibration: too few matured bars to probe yet
    }
    latest = read_latest(home)
    features = pl.read_parquet(home / "features" / "cross_asset_features.parquet")
    for symbol in SYMBOLS:
        row = latest.rows[symbol]
        newest = features.filter(pl.col("symbol") == symbol)["timestamp"].max()
        assert row["bar_time"] == newest and row["bar_close_time"] == newest + 900_000
        assert 0.0 <= row["deep_p_up"] <= 1.0 and 0.0 <= row["ensemble_p_up"] <= 1.0
        assert row["signal"] in ("ENTRY_LONG", "ENTRY_SHORT", "EXIT", "HOLD")
        assert row["deep_sigma"] ** 2 == pytest.approx(
            row["deep_aleatoric"] + row["deep_epistemic"]
        )
        assert row["mc_samples"] == 5 and row["source"] == "synthetic"
        assert row["kill_switch"] in ("ACTIVE", "REDUCING", "HALTED")
    history = read_history(home)
    assert history.height >= len(SYMBOLS)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        n_latest = conn.sql("SELECT count(*) FROM latest_predictions").fetchall()[0][0]
        n_hist = conn.sql("SELECT count(*) FROM predictions").fetchall()[0][0]
    assert n_latest == len(SYMBOLS) and n_hist == history.height


@pytest.fixture(scope="module")
def api(published, env):
    settings = Settings.from_env(overrides={"LEVIBOT_HOME": str(published["home"])})
    with serving(create_app(settings)) as url:
        yield url, published["home"]


def test_api_serves_the_published_rows(api):
    base, home = api
    latest = read_latest(home)
    for symbol in SYMBOLS:
        row = latest.rows[symbol]
        ens = requests.get(f"{base}/ml/predict_ensemble", params={"symbol": symbol}, timeout=10)
        assert ens.status_code == 200
        body = ens.json()
        assert body["p_up"] == pytest.approx(row["ensemble_p_up"])
        # The seed's vocabulary: ENTRY_LONG / ENTRY_SHORT are served as ENTRY with the side.
        entries = {"ENTRY_LONG": ("ENTRY", "long"), "ENTRY_SHORT": ("ENTRY", "short")}
        if row["signal"] in entries:
            assert (body["signal"], body["side"]) == entries[row["signal"]]
        else:
            assert body["signal"] == row["signal"]
        assert body["bar_time"] == row["bar_time"] and type(body["uncertainty"]) is float
        deep = requests.get(f"{base}/ml/predict_deep", params={"symbol": symbol}, timeout=10)
        assert deep.json()["p_up"] == pytest.approx(row["deep_p_up"])
        assert deep.json()["model_version"] == row["deep_version"]
        lgbm = requests.get(f"{base}/ml/predict", params={"symbol": symbol}, timeout=10)
        assert lgbm.json()["p_up"] == pytest.approx(row["lgbm_p_up"])
    more = requests.get(
        f"{base}/ml/predict_deep", params={"symbol": "BTCUSDT", "n_samples": 17}, timeout=60
    ).json()
    assert more["recomputed"] is True and more["mc_samples"] == 17 and 0 <= more["p_up"] <= 1
    families = {
        f.name: f
        for f in text_string_to_metric_families(
            requests.get(f"{base}/metrics/prom", timeout=10).text
        )
    }
    unc = {s.labels["symbol"]: s.value for s in families["levibot_ml_uncertainty"].samples}
    assert unc == {s: pytest.approx(latest.rows[s]["deep_sigma"]) for s in SYMBOLS}


def test_halting_by_hand_shows_in_healthz(api):
    base, home = api
    switch = KillSwitch(home)
    before = requests.get(f"{base}/healthz", timeout=10)
    switch.engage("HALTED", reason="exchange outage drill", by="test")
    try:
        halted = requests.get(f"{base}/healthz", timeout=10)
        assert halted.status_code == 503
        assert "exchange outage drill" in json.dumps(halted.json())
    finally:
        switch.release(by="test", reason="drill over")
    assert requests.get(f"{base}/healthz", timeout=10).status_code == before.status_code


def test_paper_drawdown_past_the_limit_halts_the_publish(published, api):
    # Runs after the API tests: it changes the kill-switch and publishes once more.
    from levibot_pipelines.adapters.prediction_files import validate_rows
    from levibot_pipelines.adapters.store import ParquetStore
    from levibot_pipelines.defs.resources import ModelResource
    from levibot_pipelines.usecases.publish import publish_latest

    home = published["home"]
    s = Settings.from_env(
        overrides={"LEVIBOT_HOME": str(home), "LEVIBOT_KILL_MAX_DRAWDOWN": "0.000001"}
    )
    latest = read_latest(home).rows["BTCUSDT"]
    candles = ParquetStore(home).read_ohlcv("BTCUSDT").sort("timestamp")
    ts, opens = candles["timestamp"].to_list(), candles["open"].to_list()
    now_close = candles.filter(pl.col("timestamp") == latest["bar_time"])["close"][0]
    newest = ts.index(latest["bar_time"])
    # A published long held to now that is below its equity peak: its fill (the next open) is
    # above the newest close (under water from the start, 1.0) or a later close was (under
    # water from a later peak). The synthetic market follows the wall clock, so search all of
    # it; only a newest close that is the market's all-time high leaves no such long.
    closes = candles["close"].to_list()
    t = next(
        (
            i
            for i in range(newest - 2, 0, -1)
            if opens[i + 1] > now_close or max(closes[i + 1 : newest]) > now_close
        ),
        None,
    )
    if t is None:
        pytest.skip("the newest close is the synthetic market's all-time high today")
    entry = {
        **latest,
        "bar_time": ts[t],
        "bar_close_time": ts[t] + 900_000,
        "published_at": latest["published_at"] - 1,
        "close": candles["close"][t],
        "signal": "ENTRY_LONG",
        "size": 1.0,
        "position": 1.0,
        "stop_loss": None,
        "take_profit": None,
    }
    injected = home / "published" / "history" / "predictions-1-injected.parquet"
    validate_rows(pl.DataFrame([entry])).write_parquet(injected)
    switch, tracker = KillSwitch(home), ModelResource(s).tracker()
    try:
        report = publish_latest(s, tracker, int(time.time() * 1000))
        assert report.kill_switch == "HALTED"
        # Drift is evaluated by the publisher too (usecases.monitor + usecases.risk).
        assert not [n for n in report.notes if "feature drift not evaluated" in n]
        rows = {r["symbol"]: r for r in report.rows.to_dicts()}
        assert rows["BTCUSDT"]["paper_drawdown"] > 0.0
        # The flat policy closes the injected long and says which side it closed.
        btc = rows["BTCUSDT"]
        assert (btc["signal"], btc["closed_side"], btc["position"]) == ("EXIT", "long", 0.0)
        assert btc["decision_reason"].startswith("exit long: no validated edge after costs")
        # Every row carries the new state and no entry goes out. (Whether a symbol's policy
        # wanted to enter at all depends on the tiny models; when none did, this does not tell
        # a decision made under HALTED from one made before the trigger fired.)
        for row in rows.values():
            assert row["kill_switch"] == "HALTED" and "paper drawdown" in row["kill_switch_reason"]
            assert row["signal"] not in ("ENTRY_LONG", "ENTRY_SHORT") and row["size"] == 0.0
        assert switch.status().entries["drawdown"]["state"] == "HALTED"
        assert [h["new"] for h in switch.history() if h["entry"] == "drawdown"][-1] == "HALTED"
    finally:
        injected.unlink()
        switch.release(by="test", reason="drawdown test over", all_entries=True)


def test_only_a_lock_conflict_leaves_the_warehouse_views_unrefreshed(tmp_path, caplog):
    from contextlib import contextmanager

    from dagster_duckdb import DuckDBResource

    from levibot_pipelines.defs.common import refresh_warehouse_views

    class Warehouse:
        def __init__(self, error: Exception) -> None:
            self.error = error

        @contextmanager
        def get_connection(self):
            raise self.error
            yield

    locked = duckdb.IOException('IO Error: Could not set lock on file "w.duckdb": Conflicting')
    with caplog.at_level("WARNING"):
        note = refresh_warehouse_views(Warehouse(locked), lambda conn: ["v"])
    assert note.startswith("not refreshed: IO Error: Could not set lock on file")
    assert "DuckDB views not refreshed" in caplog.text
    for other in (duckdb.IOException("IO Error: disk full"), duckdb.CatalogException("no table")):
        with pytest.raises(type(other)):
            refresh_warehouse_views(Warehouse(other), lambda conn: ["v"])
    real = DuckDBResource(database=str(tmp_path / "w.duckdb"))
    assert refresh_warehouse_views(real, lambda conn: ["v"]) == ["v"]


def test_the_publisher_trades_the_policy_stored_with_the_champions(published):
    """A stored non-flat policy drives the published row: an expected-return map that pays
    500 bps over 16 bars at any score enters long, net of the 24 bps round trip."""
    from levibot_pipelines.adapters.home import ensemble_weights_path, history_dir
    from levibot_pipelines.adapters.store import write_text_atomic
    from levibot_pipelines.core.trading.decision import DecisionPolicy, ExpectedReturnMap
    from levibot_pipelines.defs.resources import ModelResource
    from levibot_pipelines.usecases.publish import publish_latest

    home = published["home"]
    s = Settings.from_env(overrides={"LEVIBOT_HOME": str(home)})
    path = ensemble_weights_path(home, "BTCUSDT")
    original = path.read_text()
    pair = json.loads(original)
    assert pair["decision"]["policy"]["model"] == "flat"  # tiny data: nothing validated
    policy = DecisionPolicy("ensemble", 16, 5.0, 24.0, 12.0, uncertainty_penalty=1.0)
    emap = ExpectedReturnMap((0.0, 1.0), (0.05, 0.05), 500)
    pair["decision"] = {**pair["decision"], "policy": policy.to_dict(), "map": emap.to_dict()}
    before = set(history_dir(home).iterdir())
    KillSwitch(home).release(by="test", reason="engine test", all_entries=True)
    try:
        write_text_atomic(json.dumps(pair), path)
        report = publish_latest(s, ModelResource(s).tracker(), int(time.time() * 1000))
        rows = {r["symbol"]: r for r in report.rows.to_dicts()}
        btc = rows["BTCUSDT"]
        assert (btc["signal"], btc["size"], btc["position"]) == ("ENTRY_LONG", 1.0, 1.0)
        assert (btc["decision_model"], btc["horizon"]) == ("ensemble", 16)
        assert btc["expected_net_bps"] == pytest.approx(476.0)
        assert btc["decision_reason"] == "entry: expected net +476.0 bps over 16 bars"
        assert btc["stop_loss"] is None and btc["take_profit"] is None
        for symbol in ("ETHUSDT", "SOLUSDT"):  # still flat: HOLD with the reason
            row = rows[symbol]
            assert (row["signal"], row["decision_model"], row["horizon"]) == ("HOLD", "flat", None)
            assert row["decision_reason"] == "no validated edge after costs"
        assert read_latest(home).rows["BTCUSDT"]["decision_reason"] == btc["decision_reason"]
    finally:
        write_text_atomic(original, path)
        for f in set(history_dir(home).iterdir()) - before:
            f.unlink()
