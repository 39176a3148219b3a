"""Live recalibration on a temporary home with real files (stored bars, published history, live
scores, ``live/recalibration.json``) and a real MLflow store: the bars are built so that every
fitted Platt map and every log loss is known by hand.

The market: ``UP[i % 8]`` says whether bar ``i`` went up over the next bar (horizon 1). The
published LightGBM says 0.6 on even bars and 0.4 on odd ones, where 3 of 4 even bars and 1 of 4
odd bars go up: the calibrated map sends 0.6 to 0.75 and 0.4 to 0.25, a Platt map with ``b = 0``
and ``a = logit(0.75) / logit(0.6) = 2.7095``; over 8 bars the log loss is 0.612192 before
(``-(0.75 ln 0.6 + 0.25 ln 0.4)``) and 0.562335 after (``-(0.75 ln 0.75 + 0.25 ln 0.25)``). The
Transformer says the opposite (a fitted slope < 0: never a candidate); the ensemble says what
LightGBM says. ETH's bars 16..23 go the other way (the map is then worse: rejected); SOL says 0.99
and 0.01 (far from calibrated: drift).
"""

from __future__ import annotations

import json
import math
import time
import uuid

import dagster as dg
import polars as pl
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from levibot_pipelines.adapters.home import history_dir, live_recalibration_path
from levibot_pipelines.adapters.live_files import read_scores, read_summary
from levibot_pipelines.adapters.prediction_files import read_history, validate_rows
from levibot_pipelines.adapters.recal_files import read_state, write_state
from levibot_pipelines.adapters.store import ParquetStore, write_parquet_atomic
from levibot_pipelines.api import create_app
from levibot_pipelines.core.evaluation.recal_state import (
    ACTIVATION_DELAY_MS,
    empty_state,
    maps_of,
    served_map,
)
from levibot_pipelines.core.evaluation.recalibration import (
    DRIFT_CHI2,
    fit_map,
    judge,
    labelled_rows,
    of_versions,
    served_rows,
)
from levibot_pipelines.core.models.calibration import Calibrator
from levibot_pipelines.definitions import load_definitions
from levibot_pipelines.defs.live import live_scores
from levibot_pipelines.defs.recalibration import calibration_drift, live_recalibration
from levibot_pipelines.defs.resources import ModelResource, TradingResource
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.live_scores import live_config, score_matured
from levibot_pipelines.usecases.publish import publish_latest
from levibot_pipelines.usecases.recalibration import (
    recal_config,
    recalibrate,
    recalibrate_published,
)
from levibot_pipelines_tests.conftest import (
    SESSION_ENV,
    SYMBOLS,
    TF_MS,
    levibot_environment,
    recent_start,
)
from levibot_pipelines_tests.test_api import serving
from levibot_pipelines_tests.test_prediction_files import make_row

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
HOUR = 3_600_000
UP = (1, 1, 1, 0, 1, 0, 0, 0)  # bar i % 8 goes up: even 3 of 4, odd 1 of 4
A_BTC = math.log(3) / math.log(1.5)  # logit(0.75) / logit(0.6) = 2.7095
LL_BEFORE, LL_AFTER = 0.6121919007930318, 0.5623351446188083
MODELS3 = ("lgbm", "deep", "ensemble")
ENV = {
    "LEVIBOT_LABEL_HORIZON": "1",
    "LEVIBOT_RECAL_MIN_BARS": "16",
    "LEVIBOT_RECAL_SHADOW_BARS": "8",
    "LEVIBOT_RECAL_INTERVAL_HOURS": "24",
    "LEVIBOT_MLFLOW_UI": "http://mlflow.test",
}


def _bar(i: int) -> int:
    return T0 + i * TF_MS


def _published_at(i: int) -> int:
    return _bar(i + 1) + 30_000  # as the publisher: 30 s after the bar's close


def _up(symbol: str, i: int) -> int:
    flip = symbol == "ETHUSDT" and 16 <= i < 24
    return 1 - UP[i % 8] if flip else UP[i % 8]


def _store(home, upto: int) -> None:
    """Bars 0 .. upto of every symbol, close moving 1% up or down as ``_up`` says."""
    store = ParquetStore(home)
    for sym in SYMBOLS:
        close = [100.0]
        for i in range(upto):
            close.append(close[-1] * (1.01 if _up(sym, i) else 0.99))
        n = len(close)
        store.upsert_ohlcv(
            sym,
            pl.DataFrame(
                {
                    "symbol": [sym] * n,
                    "timestamp": [_bar(i) for i in range(n)],
                    "open": close,
                    "high": [c * 1.02 for c in close],
                    "low": [c * 0.98 for c in close],
                    "close": close,
                    "volume": [1.0] * n,
                    "source": ["synthetic"] * n,
                }
            ),
        )


def _row(symbol: str, i: int) -> dict:
    """The models' own probabilities for bar ``i`` (module docstring), as the publisher makes
    them before recalibration."""
    hi = 0.99 if symbol == "SOLUSDT" else 0.6
    p = hi if i % 2 == 0 else 1.0 - hi
    return make_row(
        symbol,
        bar_time=_bar(i),
        published_at=_published_at(i),
        lgbm_p_up=p,
        deep_p_up=1.0 - p,
        ensemble_p_up=p,
        signal="HOLD",
        size=0.0,
        position=0.0,
        stop_loss=None,
        take_profit=None,
    )


def _publish(home, bars: range, symbols=SYMBOLS) -> list[dict]:
    """One history file per bar, each row recalibrated as the publisher does at its publish
    time; returns the rows written."""
    written = []
    for i in bars:
        rows = {sym: _row(sym, i) for sym in symbols}
        recalibrate_published(home, rows, _published_at(i), [])
        frame = validate_rows(pl.DataFrame(list(rows.values())))
        path = history_dir(home) / f"predictions-{_published_at(i)}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet_atomic(frame, path)
        written += rows.values()
    return written


@pytest.fixture(scope="module")
def timeline(tmp_path_factory):
    home = tmp_path_factory.mktemp("recal_home")
    s = Settings.from_env({"LEVIBOT_HOME": str(home), **ENV})
    tracker, cfg = ModelResource(s).tracker(), recal_config(s)
    out: dict = {"home": home, "settings": s, "tracker": tracker}

    def run(name: str, now: int) -> None:
        """As ``publish_job`` after a publish: live scoring, then recalibration."""
        score_matured(home, live_config(s), now)
        out[f"{name}_summary"] = read_summary(home)
        out[name] = recalibrate(home, tracker, cfg, now)
        out[f"{name}_state"] = read_state(home)

    _store(home, 15)  # bars 0..15 stored: bars 0..14 matured
    _publish(home, range(16))
    run("too_few", _bar(16) + 60_000)
    _store(home, 16)  # bar 15 matured: 16 bars
    now2 = _bar(17) + 60_000
    run("fit", now2)
    out["now2"] = now2
    rows = {sym: _row(sym, 17) for sym in SYMBOLS}
    out["publish_candidate"] = recalibrate_published(home, rows, now2 + 600_000, [])
    out["rows_candidate"] = rows
    run("within", now2 + HOUR)  # an hour later, nothing new
    _store(home, 19)
    _publish(home, range(16, 19))  # bars 16..18 matured after the fit
    run("shadow", _bar(20) + 60_000)
    _store(home, 24)
    _publish(home, range(19, 24))  # bars 16..23: the 8 shadow bars
    now5 = _bar(25) + 60_000
    run("judged", now5)
    out["now5"] = now5
    _store(home, 32)
    out["after_activation"] = _publish(home, range(24, 32), symbols=("BTCUSDT",))
    run("before_interval", now2 + 24 * HOUR - 1)
    run("interval", now2 + 24 * HOUR)
    return out


def _map(state: dict, map_id: str) -> dict:
    return next(m for m in state["maps"] if m["id"] == map_id)


def test_too_few_matured_bars_fit_nothing_and_say_how_many_are_missing(timeline):
    res = timeline["too_few"]
    assert res.fitted == [] and timeline["too_few_state"]["maps"] == []
    btc = res.table.filter(pl.col("symbol") == "BTCUSDT")
    assert btc["missing"].to_list() == [1, 1, 1] and btc["bars"].to_list() == [15, 15, 15]
    assert "BTCUSDT lgbm: no fit: 15 matured bars, 16 needed: 1 missing" in res.notes


def test_a_fit_is_a_candidate_with_the_hand_checked_platt_map(timeline):
    res, state = timeline["fit"], timeline["fit_state"]
    assert sorted(res.fitted) == sorted(f"{s}-{m}-1" for s in SYMBOLS for m in MODELS3)
    btc = _map(state, "BTCUSDT-lgbm-1")
    assert btc["stage"] == "candidate" and btc["n_fit"] == 16
    assert (btc["first_bar"], btc["last_bar"]) == (_bar(0), _bar(15))
    assert btc["calibrator"]["a"] == pytest.approx(A_BTC, abs=1e-4)
    assert btc["calibrator"]["b"] == pytest.approx(0.0, abs=1e-4)
    assert btc["fit"]["log_loss_before"] == pytest.approx(LL_BEFORE, abs=1e-9)
    assert btc["fit"]["log_loss_after"] == pytest.approx(LL_AFTER, abs=1e-6)
    assert btc["versions"] == {"lgbm_version": "2"}
    assert _map(state, "BTCUSDT-ensemble-1")["versions"] == {
        "lgbm_version": "2",
        "deep_version": "3",
    }
    deep = _map(state, "BTCUSDT-deep-1")  # says 0.4 where 0.75 happens: the slope is -a
    assert deep["calibrator"]["a"] == pytest.approx(-A_BTC, abs=1e-4)
    assert deep["stage"] == "rejected" and "reverse the ranking" in deep["events"][-1]["reason"]


def test_every_fit_and_stage_change_is_an_mlflow_run(timeline):
    client, state = timeline["tracker"].client, timeline["interval_state"]
    exp = timeline["tracker"].experiment_id
    runs = client.search_runs([exp], "tags.kind = 'recalibration'", max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    events = [e for m in state["maps"] for e in m["events"]]
    assert sorted(by_id) == sorted(e["run_id"] for e in events)
    fit = by_id[_map(state, "BTCUSDT-lgbm-1")["events"][0]["run_id"]]
    assert fit.data.params["symbol"] == "BTCUSDT" and fit.data.params["model"] == "lgbm"
    assert fit.data.params["n_bars"] == "16" and fit.data.params["stage"] == "candidate"
    assert float(fit.data.params["platt_a"]) == pytest.approx(A_BTC, abs=1e-4)
    assert fit.data.params["window.first_bar"] == str(_bar(0))
    assert fit.data.metrics["log_loss_before"] == pytest.approx(LL_BEFORE, abs=1e-9)
    assert fit.data.metrics["log_loss_after"] == pytest.approx(LL_AFTER, abs=1e-6)
    active = by_id[_map(state, "BTCUSDT-lgbm-1")["events"][-1]["run_id"]]
    assert active.data.params["stage"] == "active"
    assert active.data.metrics["shadow_mean_diff"] == pytest.approx(LL_BEFORE - LL_AFTER, 1e-5)


def test_the_rate_limit_comes_from_the_stored_fit_time(timeline):
    assert timeline["within"].fitted == [] and timeline["before_interval"].fitted == []
    assert len(timeline["within_state"]["maps"]) == len(timeline["fit_state"]["maps"])
    fitted = timeline["interval"].fitted  # 24 h after the fit, to the millisecond
    assert "BTCUSDT-deep-2" in fitted and "BTCUSDT-lgbm-2" in fitted
    deep = maps_of(timeline["interval_state"]["maps"], "BTCUSDT", "deep")
    assert [m["fitted_at"] for m in deep] == [timeline["now2"], timeline["now2"] + 24 * HOUR]


def test_a_candidate_is_scored_only_on_bars_matured_after_its_fit(timeline):
    recal = timeline["shadow_summary"]["symbols"]["BTCUSDT"]["models"]["recal_lgbm"]
    # bars 16 (0.75, up), 17 (0.25, up), 18 (0.75, up): never the 16 bars it was fitted on
    assert recal["n"] == 3
    # (2 (-ln 0.75) - ln 0.25) / 3, to the fitted map's precision
    assert recal["log_loss"] == pytest.approx(0.6538861686744841, abs=1e-5)
    shadow = _map(timeline["shadow_state"], "BTCUSDT-lgbm-1")
    assert shadow["stage"] == "candidate" and shadow["shadow"]["n"] == 3
    assert "recal_lgbm" not in timeline["fit_summary"]["symbols"]["BTCUSDT"]["models"]
    assert "recal_lgbm" not in timeline["before_interval_summary"]["symbols"]["BTCUSDT"]["models"]


def test_no_worse_is_activated_and_worse_is_rejected(timeline):
    state, now5 = timeline["judged_state"], timeline["now5"]
    btc, eth = _map(state, "BTCUSDT-lgbm-1"), _map(state, "ETHUSDT-lgbm-1")
    assert btc["stage"] == "active" and btc["effective_from"] == now5 + ACTIVATION_DELAY_MS
    assert btc["shadow"]["n"] == 8
    assert btc["shadow"]["mean_diff"] == pytest.approx(LL_BEFORE - LL_AFTER, abs=1e-5)
    assert eth["stage"] == "rejected" and eth["shadow"]["n"] == 8
    assert eth["shadow"]["mean_diff"] == pytest.approx(-0.2967168341057491, abs=1e-5)
    assert [e["stage"] for e in btc["events"]] == ["candidate", "active"]
    changes = timeline["judged"].changes
    assert any(c.startswith("BTCUSDT-lgbm-1: active") for c in changes)
    assert any(c.startswith("ETHUSDT-lgbm-1: rejected") for c in changes)


def test_the_shadow_rule_on_four_hand_checked_bars():
    cal = Calibrator(method="platt", a=1.0, b=math.log(3))  # 0.5 -> 0.75
    rows = pl.DataFrame({"y_up": [1.0, 1.0, 1.0, 0.0], "p_served": [0.5] * 4, "p_raw": [0.5] * 4})
    better = judge(rows, cal, horizon=1, shadow_bars=4)
    # ln 2 - (3 (-ln 0.75) + (-ln 0.25)) / 4
    assert better.stage == "active"
    assert better.mean_diff == pytest.approx(math.log(2) - 0.5623351446188083, abs=1e-12)
    worse = judge(rows.with_columns(y_up=1.0 - pl.col("y_up")), cal, horizon=1, shadow_bars=4)
    assert worse.stage == "rejected"
    # ln 2 - (3 (-ln 0.25) + (-ln 0.75)) / 4
    assert worse.mean_diff == pytest.approx(
        math.log(2) - (3 * math.log(4) - math.log(0.75)) / 4, abs=1e-12
    )
    waiting = judge(rows.head(3), cal, horizon=1, shadow_bars=4)
    assert waiting.stage == "candidate" and waiting.n == 3


def test_the_publisher_applies_an_active_map_and_never_a_candidate(timeline):
    assert timeline["publish_candidate"] == {}  # only candidates then
    assert timeline["rows_candidate"]["BTCUSDT"]["lgbm_p_up"] == 0.4
    home, now5 = timeline["home"], timeline["now5"]
    start = now5 + ACTIVATION_DELAY_MS
    early = {sym: _row(sym, 25) for sym in SYMBOLS}
    assert recalibrate_published(home, early, start - 1, []) == {}
    rows = {sym: _row(sym, 26) for sym in SYMBOLS}  # even bar: 0.6 (SOL 0.99)
    applied = recalibrate_published(home, rows, start, [])
    assert applied["BTCUSDT"] == ["BTCUSDT-lgbm-1", "BTCUSDT-ensemble-1"]
    assert rows["BTCUSDT"]["lgbm_p_up"] == pytest.approx(0.75, abs=1e-4)
    assert rows["BTCUSDT"]["ensemble_p_up"] == pytest.approx(0.75, abs=1e-4)
    assert rows["BTCUSDT"]["deep_p_up"] == 0.4  # its map was rejected
    assert rows["ETHUSDT"]["lgbm_p_up"] == 0.6  # rejected: not applied
    assert rows["SOLUSDT"]["lgbm_p_up"] == pytest.approx(0.75, abs=1e-4)  # SOL's map: active
    assert rows["BTCUSDT"]["lgbm_confidence"] == _row("BTCUSDT", 26)["lgbm_confidence"]


def test_recalibrated_rows_are_fitted_again_on_the_models_own_probability(timeline):
    home, s = timeline["home"], timeline["settings"]
    published = timeline["after_activation"]
    # bar 24 was published 30 s after its close, before the map became effective; 25.. after
    assert [r["lgbm_p_up"] for r in published[:3]] == pytest.approx([0.6, 0.25, 0.75], abs=1e-4)
    state = timeline["interval_state"]
    rows = labelled_rows(read_scores(home), read_history(home), 1)
    v = {"lgbm_version": "2"}
    served = served_rows(of_versions(rows, "BTCUSDT", "lgbm", v), state["maps"], "lgbm", v)
    tail = served.filter(pl.col("bar_time") >= _bar(24))
    assert tail["map_id"].to_list() == [None] + ["BTCUSDT-lgbm-1"] * 7
    assert tail["p_raw"].to_list() == pytest.approx([0.6, 0.4] * 4, abs=1e-9)
    f = fit_map(served.filter(pl.col("bar_time") >= _bar(16)), s.serving.recal_min_bars)
    assert f.calibrator.a == pytest.approx(A_BTC, abs=1e-4)


def test_served_map_follows_effective_and_retired_times():
    m = {
        "id": "X-lgbm-1",
        "symbol": "X",
        "model": "lgbm",
        "stage": "retired",
        "versions": {"lgbm_version": "2"},
        "effective_from": 100,
        "retired_from": 200,
    }
    newer = m | {"id": "X-lgbm-2", "stage": "active", "effective_from": 200, "retired_from": None}
    at = {t: served_map([m, newer], "X", "lgbm", {"lgbm_version": "2"}, t) for t in (99, 100, 200)}
    assert at[99] is None and at[100]["id"] == "X-lgbm-1" and at[200]["id"] == "X-lgbm-2"
    assert served_map([m], "X", "lgbm", {"lgbm_version": "3"}, 150) is None


def test_drift_is_measured_on_what_is_published(timeline):
    drift = timeline["judged_state"]["drift"]
    sol, btc = drift["SOLUSDT"]["lgbm"], drift["BTCUSDT"]["lgbm"]
    # SOL says 0.99 / 0.01 where 0.75 / 0.25 happens: shift 0.24, D = 32 x 0.596495
    assert sol["max_abs_shift"] == pytest.approx(0.24, abs=1e-4)
    assert sol["deviance"] == pytest.approx(19.087844920586896, abs=1e-3)
    assert sol["drifted"] is True and sol["threshold"] == pytest.approx(13.815510557964274)
    # BTC says 0.6 / 0.4: shift 0.15, D = 32 x 0.049857 = 1.60 < 13.82
    assert btc["max_abs_shift"] == pytest.approx(0.15, abs=1e-4)
    assert btc["deviance"] == pytest.approx(1.595416197575151, abs=1e-3)
    assert btc["drifted"] is False
    assert DRIFT_CHI2 == pytest.approx(-2 * math.log(0.001))


@pytest.fixture(scope="module")
def dagster_run(timeline):
    s = timeline["settings"]
    resources = {"trading": TradingResource(s), "models": ModelResource(s)}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [live_scores, live_recalibration, calibration_drift],
            resources=resources,
            instance=instance,
        )
        with serving(create_app(s)) as base:
            text = requests.get(f"{base}/metrics/prom", timeout=10).text
    return result, text


def test_the_asset_and_its_drift_check_through_dagster(dagster_run, timeline):
    result, _ = dagster_run
    assert result.success
    meta = result.asset_materializations_for_node("live_recalibration")[0].metadata
    assert str(meta["path"].value) == str(live_recalibration_path(timeline["home"]))
    assert "SOLUSDT/lgbm" in meta["drifted"].value
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "calibration_drift" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert {"SOLUSDT/lgbm", "SOLUSDT/ensemble"} <= set(check.metadata["drifted"].value)
    assert "BTCUSDT/lgbm" not in check.metadata["drifted"].value


def test_the_api_serves_the_calibration_drift_gauge(dagster_run):
    _, text = dagster_run
    fam = {f.name: f for f in text_string_to_metric_families(text)}
    drift = {
        (x.labels["symbol"], x.labels["model"]): x.value
        for x in fam["levibot_live_calibration_drift"].samples
    }
    assert drift[("SOLUSDT", "lgbm")] == pytest.approx(0.24, abs=1e-4)
    assert set(drift) <= {(s, m) for s in SYMBOLS for m in MODELS3}


def test_a_corrupt_state_file_is_named_and_kept(tmp_path):
    s = Settings.from_env({"LEVIBOT_HOME": str(tmp_path), **ENV})
    path = live_recalibration_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "maps": [')
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [live_recalibration],
            resources={"trading": TradingResource(s), "models": ModelResource(s)},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.cause.message
    assert str(path) in message and "not valid JSON" in message
    assert path.read_text() == '{"format": 1, "maps": ['  # nothing lost
    notes: list[str] = []
    rows = {"BTCUSDT": _row("BTCUSDT", 0)}
    assert recalibrate_published(tmp_path, rows, _published_at(0), notes) == {}
    assert rows["BTCUSDT"]["lgbm_p_up"] == 0.6 and str(path) in notes[0]
    path.write_text(json.dumps(empty_state() | {"maps": [{"id": "x"}]}))
    with pytest.raises(ValueError, match="a map must have the keys"):
        read_state(tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A home of this module's own with the session's tiny models trained for every symbol."""
    home = tmp_path_factory.mktemp("recal_publish") / "home"
    values = {**SESSION_ENV, "LEVIBOT_HOME": str(home), "LEVIBOT_START": recent_start(20)}
    with levibot_environment(values):
        defs = load_definitions()
        with dg.instance_for_test() as inst:
            for symbol in SYMBOLS:
                job = defs.resolve_job_def("ingest_job")
                assert job.execute_in_process(partition_key=symbol, instance=inst).success
            assert defs.resolve_job_def("features_job").execute_in_process(instance=inst).success
            for symbol in SYMBOLS:
                job = defs.resolve_job_def("training_job")
                assert job.execute_in_process(partition_key=symbol, instance=inst).success
        yield Settings.from_env()


def _platt(a: float, b: float) -> dict:
    return Calibrator(method="platt", a=a, b=b).to_dict()


def test_publish_latest_recalibrates_only_the_published_probabilities(trained):
    s = trained
    tracker = ModelResource(s).tracker()
    now = int(time.time() * 1000)
    plain = publish_latest(s, tracker, now)
    before = {r["symbol"]: r for r in plain.rows.to_dicts()}["BTCUSDT"]
    assert plain.recalibrated == {}
    lg, dp = before["lgbm_version"], before["deep_version"]
    record = {
        "symbol": "BTCUSDT",
        "fitted_at": now - HOUR,
        "n_fit": 16,
        "first_bar": 0,
        "last_bar": 1,
        "fit": {},
        "shadow": None,
        "retired_from": None,
        "events": [],
    }
    maps = [  # lgbm and ensemble active (0.5 -> 0.75 in the logit), deep a candidate
        record
        | {"id": "BTCUSDT-lgbm-1", "model": "lgbm", "stage": "active"}
        | {"versions": {"lgbm_version": lg}, "calibrator": _platt(1.0, math.log(3))}
        | {"effective_from": now},
        record
        | {"id": "BTCUSDT-ensemble-1", "model": "ensemble", "stage": "active"}
        | {"versions": {"lgbm_version": lg, "deep_version": dp}}
        | {"calibrator": _platt(2.0, 0.0), "effective_from": now},
        record
        | {"id": "BTCUSDT-deep-1", "model": "deep", "stage": "candidate"}
        | {"versions": {"deep_version": dp}, "calibrator": _platt(1.0, 1.0)}
        | {"effective_from": None},
    ]
    write_state(s.home, empty_state() | {"maps": maps})
    again = publish_latest(s, tracker, now + 1000)
    after = {r["symbol"]: r for r in again.rows.to_dicts()}["BTCUSDT"]
    assert again.recalibrated == {"BTCUSDT": ["BTCUSDT-lgbm-1", "BTCUSDT-ensemble-1"]}
    odds = before["lgbm_p_up"] / (1 - before["lgbm_p_up"])
    assert after["lgbm_p_up"] == pytest.approx(3 * odds / (1 + 3 * odds), abs=1e-12)
    e = before["ensemble_p_up"]
    assert after["ensemble_p_up"] == pytest.approx(e**2 / (e**2 + (1 - e) ** 2), abs=1e-12)
    assert after["deep_p_up"] == before["deep_p_up"]  # a candidate is never published
    # The decision engine decided on the models' own probabilities: the same decision.
    decision = ("signal", "size", "position", "regime", "entry_threshold", "decision_model")
    assert {k: after[k] for k in decision} == {k: before[k] for k in decision}
    assert after["expected_net_bps"] == before["expected_net_bps"]
    assert after["lgbm_confidence"] == before["lgbm_confidence"]
    others = {r["symbol"]: r for r in again.rows.to_dicts()}
    first = {r["symbol"]: r for r in plain.rows.to_dicts()}
    assert all(others[x]["lgbm_p_up"] == first[x]["lgbm_p_up"] for x in ("ETHUSDT", "SOLUSDT"))
