"""Shadow challengers, fast parts: the shadow rule by hand (both directions, the minimum bars,
the sqrt(h) inflation), the pairing of scored bars by version, the challenger alias on a real
MLflow store, the shadow files, and ``?shadow=1`` from a real API server."""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import requests

from levibot_pipelines.adapters import home as layout
from levibot_pipelines.adapters.prediction_files import (
    read_history,
    read_latest,
    remove_shadow,
    write_published,
    write_shadow,
)
from levibot_pipelines.adapters.registry import register_model
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.api import create_app
from levibot_pipelines.core.evaluation.shadow_rule import (
    bar_log_loss,
    paired_bars,
    shadow_verdict,
)
from levibot_pipelines.settings import ModelSettings, Settings
from levibot_pipelines.usecases.promote import promote_champion
from levibot_pipelines.usecases.shadow import SHADOW_REASON, untraded
from levibot_pipelines_tests.test_api import build_home, get, serving
from levibot_pipelines_tests.test_prediction_files import make_row, make_rows

# 16 paired bars: the champion says 0.5 on each; the challenger is right with 0.8 on 3 bars of
# every 4 and wrong with 0.6 on the 4th (y = 1, p = 0.4). Per bar the log-loss difference
# (champion minus challenger) is ln 2 - ln 1.25 = ln 1.6 on a right bar, ln 2 - ln 2.5 = ln 0.8
# on a wrong one: mean (3 ln 1.6 + ln 0.8) / 4 = ln(3.2768) / 4 = 0.29671683, sample std
# ln 2 * sqrt(16/15 * 3/16) = ln 2 / sqrt 5, se (h = 1) = ln 2 / (4 sqrt 5), t = 3.8287915.
Y = [1.0, 0.0, 1.0, 1.0] * 4
P_CHAMPION = [0.5] * 16
P_CHALLENGER = [0.8, 0.2, 0.8, 0.4] * 4
MEAN = math.log(3.2768) / 4
T_H1 = 4 * math.sqrt(5) * MEAN / math.log(2)


def test_bar_log_loss_by_hand():
    got = bar_log_loss(pl.Series([1.0, 0.0, 1.0]).to_numpy(), pl.Series([0.8, 0.2, 0.0]).to_numpy())
    assert got.tolist() == pytest.approx([-math.log(0.8), -math.log(0.8), -math.log(1e-15)])


def test_a_better_challenger_is_promoted_after_the_minimum_bars():
    v = shadow_verdict(Y, P_CHAMPION, P_CHALLENGER, horizon=1, min_bars=16)
    assert (v.action, v.n) == ("promote", 16)
    assert v.mean_diff == pytest.approx(0.29671683, rel=1e-7) == pytest.approx(MEAN)
    assert v.se == pytest.approx(math.log(2) / (4 * math.sqrt(5)))
    assert v.t == pytest.approx(3.8287915, rel=1e-7) == pytest.approx(T_H1)
    assert v.reason.startswith("promoted: beats the champion (16 paired bars")
    # One bar short of the minimum: it waits whatever its t.
    short = shadow_verdict(Y, P_CHAMPION, P_CHALLENGER, horizon=1, min_bars=17)
    assert (short.action, short.reason) == ("wait", "waiting: 16 of 17 paired bars")
    assert short.t == pytest.approx(T_H1)


def test_overlapping_labels_inflate_the_standard_error_by_sqrt_h():
    # h = 4: 16 overlapping 4-bar labels carry about 4 independent ones; se doubles, t halves
    # to 1.9143958 < 2: the same bars no longer promote.
    v = shadow_verdict(Y, P_CHAMPION, P_CHALLENGER, horizon=4, min_bars=16)
    assert v.se == pytest.approx(2 * math.log(2) / (4 * math.sqrt(5)))
    assert v.t == pytest.approx(T_H1 / 2) == pytest.approx(1.9143958, rel=1e-7)
    assert v.action == "wait" and "no significant difference" in v.reason


def test_a_significantly_worse_challenger_is_retired_and_a_tie_waits():
    worse = shadow_verdict(Y, P_CHALLENGER, P_CHAMPION, horizon=1, min_bars=16)
    assert worse.action == "retire" and worse.t == pytest.approx(-T_H1)
    assert worse.mean_diff == pytest.approx(-MEAN) and worse.reason.startswith("retired: ")
    assert shadow_verdict(Y, P_CHALLENGER, P_CHAMPION, horizon=4, min_bars=16).action == "wait"
    same = shadow_verdict(Y, P_CHAMPION, P_CHAMPION, horizon=1, min_bars=2)
    assert (same.action, same.mean_diff, same.t) == ("wait", 0.0, 0.0)
    # Right on every bar by the same margin: no spread, t = +inf, promoted.
    always = shadow_verdict([1.0, 1.0], [0.5, 0.5], [0.8, 0.8], horizon=1, min_bars=2)
    assert always.action == "promote" and always.t == math.inf
    assert shadow_verdict([], [], [], horizon=1, min_bars=500).action == "wait"


def test_the_rule_rejects_bad_input():
    with pytest.raises(ValueError, match="length mismatch"):
        shadow_verdict([1.0], [0.5, 0.5], [0.5], horizon=1, min_bars=1)
    with pytest.raises(ValueError, match="y must contain only 0 and 1, got 0.5"):
        shadow_verdict([0.5], [0.5], [0.5], horizon=1, min_bars=1)
    with pytest.raises(ValueError, match="p_challenger"):
        shadow_verdict([1.0], [0.5], [1.5], horizon=1, min_bars=1)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1, got 0"):
        shadow_verdict([1.0], [0.5], [0.5], horizon=0, min_bars=1)


def test_only_bars_of_the_compared_versions_are_paired():
    champion = pl.DataFrame(
        {
            "bar_time": [1, 2, 3, 4],
            "y_up": pl.Series([1, 0, 1, 1], dtype=pl.Int8),
            "lgbm_p_up": [0.5, 0.5, 0.6, 0.7],
            "lgbm_version": ["1", "1", "1", "2"],  # bar 4: another champion published it
        }
    )
    challenger = pl.DataFrame(
        {
            "bar_time": [2, 3, 4, 5],
            "lgbm_p_up": [0.1, 0.9, 0.8, 0.8],
            "lgbm_version": ["4", "5", "5", "5"],  # bar 2: an older challenger
        }
    )
    got = paired_bars(
        champion, challenger, kind="lgbm", champion_version="1", challenger_version="5"
    )
    assert got.to_dicts() == [{"bar_time": 3, "y_up": 1.0, "p_champion": 0.6, "p_challenger": 0.9}]
    with pytest.raises(ValueError, match="kind must be one of"):
        paired_bars(
            champion, challenger, kind="ensemble", champion_version="1", challenger_version="5"
        )


def test_a_retrain_takes_the_challenger_alias_while_a_champion_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    tracker = Tracker.for_home(tmp_path, ui_base=ModelSettings().mlflow_ui)

    def retrain(value: float) -> SimpleNamespace:
        registered = register_model(
            tracker,
            name="m",
            run_name="r",
            params={},
            metrics={"log_loss": value},
            files={"model/x.txt": "x"},
            window="w1",
        )
        decision = promote_champion(
            tracker,
            "m",
            registered.version,
            value=value,
            window="w1",
            score_version=lambda v: pytest.fail("the champion is already scored on w1"),
            shadow=True,
        )
        tags = tracker.client.get_model_version("m", registered.version).tags
        return SimpleNamespace(version=registered.version, decision=decision, tags=tags)

    first = retrain(0.69)  # no champion: it becomes the champion directly
    assert (first.decision["alias"], first.tags["alias"]) == ("champion", "champion")
    assert first.decision["promoted"] and tracker.challenger("m") is None
    second = retrain(0.68)  # passes the offline rule: challenger, the champion stays
    assert tracker.champion("m")[0] == "1" and tracker.challenger("m")[0] == "2"
    assert second.decision["alias"] == "challenger" and not second.decision["promoted"]
    assert second.tags["alias"] == "challenger" and second.tags["promoted"] == "false"
    assert second.tags["decision"] == (
        "challenger: log_loss 0.68 no worse than champion 0.69 (lower is better); in shadow "
        "beside champion v1 until it beats it on matured live bars (core.evaluation.shadow_rule)"
    )
    third = retrain(0.70)  # refused by the offline rule: no alias, the challenger stays
    assert third.decision["alias"] is None and third.tags["alias"] == "none"
    assert third.tags["decision"].startswith("kept champion: log_loss 0.7 worse than")
    assert tracker.challenger("m")[0] == "2"
    # Passes too, but v2 is still in shadow: one challenger at a time, until its verdict.
    fourth = retrain(0.685)
    assert tracker.challenger("m")[0] == "2" and tracker.champion("m")[0] == "1"
    assert fourth.decision["alias"] is None and fourth.tags["alias"] == "none"
    assert fourth.tags["decision"] == (
        "waiting: log_loss 0.685 no worse than champion 0.69 (lower is better); challenger v2 "
        "is still in shadow (one at a time until its verdict): retrain after it is promoted or "
        "retired"
    )
    tracker.remove_challenger("m")  # v2's verdict (retired): the next pass may take the alias
    assert tracker.challenger("m") is None
    tracker.remove_challenger("m")  # nothing to remove: no error
    assert retrain(0.684).decision["alias"] == "challenger"
    assert tracker.challenger("m")[0] == "5"


def test_the_shadow_layout_under_the_home():
    h = Path("/srv/levibot")
    assert layout.shadow_dir(h) == h / "published" / "shadow"
    assert layout.shadow_history_dir(h) == h / "published" / "shadow" / "history"
    assert layout.live_shadow_scores_dir(h) == h / "live" / "shadow_scores"


def _shadow_row(champion: dict, **kw) -> dict:
    """The shadow row of a champion row: other versions and probabilities, never traded."""
    row = {**champion, **untraded(champion), "lgbm_version": "7", "deep_version": "5"}
    return {**row, "lgbm_p_up": 0.62, "deep_p_up": 0.41, "ensemble_p_up": 0.52, **kw}


def test_shadow_files_are_separate_and_never_traded(tmp_path):
    btc = make_row("BTCUSDT")
    path = write_shadow(tmp_path, pl.DataFrame([_shadow_row(btc)]))
    assert path == tmp_path / "published" / "shadow" / "latest_predictions.json"
    assert (tmp_path / "published" / "shadow" / "latest_predictions.parquet").exists()
    shadow = read_latest(tmp_path, shadow=True)
    assert list(shadow.rows) == ["BTCUSDT"]
    row = shadow.rows["BTCUSDT"]
    assert (row["signal"], row["size"], row["position"]) == ("HOLD", 0.0, 0.0)
    assert row["decision_reason"] == SHADOW_REASON == "shadow: scored, never traded"
    assert (row["decision_model"], row["paper_equity"], row["paper_drawdown"]) == (
        "flat",
        1.0,
        0.0,
    )
    # The champion row's regime and kill-switch state as published; nothing of its trade.
    assert (row["regime"], row["kill_switch"]) == (btc["regime"], btc["kill_switch"])
    assert read_history(tmp_path, shadow=True).height == 1
    assert read_history(tmp_path).is_empty() and read_latest(tmp_path) is None
    with pytest.raises(ValueError, match=r"never traded: \['BTCUSDT'\]"):
        write_shadow(tmp_path, pl.DataFrame([_shadow_row(btc, signal="ENTRY_LONG")]))
    with pytest.raises(ValueError, match=r"never traded: \['BTCUSDT'\]"):
        write_shadow(tmp_path, pl.DataFrame([_shadow_row(btc, size=0.5)]))
    assert remove_shadow(tmp_path) and read_latest(tmp_path, shadow=True) is None
    assert read_history(tmp_path, shadow=True).height == 1  # the history stays
    assert not remove_shadow(tmp_path)


@pytest.fixture(scope="module")
def shadow_api(tmp_path_factory):
    built = build_home(tmp_path_factory.mktemp("shadow_api"))
    now = int(time.time() * 1000)
    rows = make_rows(bar_time=built["bar_time"], published_at=now)
    write_published(built["home"], rows, built["models"])
    btc = rows.filter(pl.col("symbol") == "BTCUSDT").row(0, named=True)
    write_shadow(built["home"], pl.DataFrame([_shadow_row(btc)]))
    settings = Settings(home=built["home"], models=ModelSettings(mc_samples=5, precision="fp32"))
    with serving(create_app(settings)) as base:
        yield base, built, btc


def test_shadow_1_serves_the_challenger_row_untraded(shadow_api):
    base, _, btc = shadow_api
    lgbm = get(base, "/ml/predict", symbol="btc/usdt", shadow="1")
    assert lgbm.status_code == 200, lgbm.text
    body = lgbm.json()
    assert (body["p_up"], body["model_version"]) == (0.62, "7")
    assert (body["signal"], body["side"], body["size"], body["position"]) == (
        "HOLD",
        None,
        0.0,
        0.0,
    )
    assert body["reason"] == "shadow: scored, never traded" and body["decision_model"] == "flat"
    assert body["stop_loss"] is None and body["kill_switch"] == "ACTIVE"
    deep = get(base, "/ml/predict_deep", symbol="BTCUSDT", shadow="true").json()
    assert (deep["p_up"], deep["model_version"], deep["signal"]) == (0.41, "5", "HOLD")
    ens = get(base, "/ml/predict_ensemble", symbol="BTCUSDT", shadow="yes").json()
    assert (ens["p_up"], ens["model_version"]) == (0.52, "lgbm v7 + deep v5")
    # The champion is served as before, its trade untouched.
    champion = get(base, "/ml/predict", symbol="BTCUSDT", shadow="0").json()
    assert champion == get(base, "/ml/predict", symbol="BTCUSDT").json()
    assert (champion["p_up"], champion["signal"], champion["side"]) == (
        btc["lgbm_p_up"],
        "ENTRY",
        "long",
    )


def test_shadow_1_is_404_naming_a_symbol_without_a_challenger(shadow_api):
    base, _, _ = shadow_api
    for path in ("/ml/predict", "/ml/predict_deep", "/ml/predict_ensemble"):
        r = get(base, path, symbol="ETHUSDT", shadow="1")
        assert r.status_code == 404
        assert r.json()["detail"] == (
            "no shadow challenger is published for ETHUSDT (symbols with one: BTCUSDT); omit "
            "shadow (or shadow=0) for the champion"
        )
        assert get(base, path, symbol="BTCUSDT", shadow="maybe").status_code == 422
    assert get(base, "/ml/predict", symbol="DOGEUSDT", shadow="1").status_code == 404


def test_shadow_deep_serves_its_published_draws_only(shadow_api):
    base, _, _ = shadow_api
    same = get(base, "/ml/predict_deep", symbol="BTCUSDT", shadow="1", n_samples=5)
    assert same.status_code == 200 and same.json()["recomputed"] is False
    other = get(base, "/ml/predict_deep", symbol="BTCUSDT", shadow="1", n_samples=7)
    assert other.status_code == 422
    [error] = other.json()["detail"]
    assert error["loc"] == ["query", "n_samples"] and error["input"] == "7"
    assert "served with its published 5 MC draws only" in error["msg"]


def test_shadow_removed_is_404_again(shadow_api):
    base, built, btc = shadow_api
    assert get(base, "/ml/predict", symbol="BTCUSDT", shadow="1").status_code == 200
    remove_shadow(built["home"])
    try:
        r = get(base, "/ml/predict", symbol="BTCUSDT", shadow="1")
        assert r.status_code == 404 and "symbols with one: none" in r.json()["detail"]
    finally:
        write_shadow(built["home"], pl.DataFrame([_shadow_row(btc)]))


def test_openapi_documents_shadow(shadow_api):
    base, _, _ = shadow_api
    doc = requests.get(f"{base}/openapi.json", timeout=30).json()
    params = {p["name"]: p for p in doc["paths"]["/ml/predict"]["get"]["parameters"]}
    assert "never traded" in params["shadow"]["description"]
    assert "404" in params["shadow"]["description"]
