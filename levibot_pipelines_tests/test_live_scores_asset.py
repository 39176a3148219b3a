"""The ``live_scores`` asset and its check, materialized by Dagster on a temporary home: real
published files (``write_published``), real stored bars, scores filling in bar by bar as the
labels mature, nothing added twice, the WARN below the noise band, and the API's gauges."""

from __future__ import annotations

import json
import math
import subprocess

import dagster as dg
import numpy as np
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from levibot_pipelines.adapters.home import live_scores_dir, live_summary_path, report_json
from levibot_pipelines.adapters.live_files import (
    LiveFileError,
    parse_summary,
    read_scores,
    read_summary,
)
from levibot_pipelines.adapters.live_prom import LIVE_METRIC_NAMES
from levibot_pipelines.adapters.plots import live_auc_figure
from levibot_pipelines.adapters.prediction_files import write_published
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.api import create_app
from levibot_pipelines.defs.live import live_scores, live_skill_within_noise_band
from levibot_pipelines.defs.resources import TradingResource
from levibot_pipelines.settings import Settings
from levibot_pipelines_tests.conftest import SYMBOLS, TF_MS, synthetic_long
from levibot_pipelines_tests.test_api import serving
from levibot_pipelines_tests.test_prediction_files import make_row, tiny_deep_files
from levibot_pipelines_tests.test_prom import PROMTOOL

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
H = 2  # label horizon in bars
N_BARS = 26
FIRST_PUBLISHED = 5
WF_AUC = 0.6


def _bar(i: int) -> int:
    return T0 + i * TF_MS


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    return synthetic_long(N_BARS, start_ms=T0, seed=11)


@pytest.fixture(scope="module")
def up(market) -> dict[tuple[str, int], bool]:
    """Whether close(t + H) > close(t), per (symbol, bar index), from all the bars."""
    out = {}
    for sym in SYMBOLS:
        close = market.filter(pl.col("symbol") == sym).sort("timestamp")["close"].to_list()
        for i in range(N_BARS - H):
            out[(sym, i)] = close[i + H] > close[i]
    return out


def _publish(home, i: int, up: dict, *, flip: bool = False, late: int = 0) -> None:
    """Publish bar ``i``: deep always wrong (AUC 0), LightGBM always right (AUC 1), the
    ensemble constant; BTC enters long (size 1) at the first published bar, then holds.
    ``flip`` publishes the opposite probabilities (a republish)."""
    rows = []
    for sym in SYMBOLS:
        good = 0.7 if up.get((sym, i), False) != flip else 0.3
        entry = sym == "BTCUSDT" and i == FIRST_PUBLISHED
        rows.append(
            make_row(
                sym,
                bar_time=_bar(i),
                published_at=_bar(i + 1) + 30_000 + late,
                deep_p_up=1.0 - good,
                lgbm_p_up=good,
                ensemble_p_up=0.5,
                signal="ENTRY_LONG" if entry else "HOLD",
                size=1.0 if entry else 0.0,
                position=1.0 if sym == "BTCUSDT" else 0.0,
                stop_loss=None,
                take_profit=None,
                closed_side=None,
            )
        )
    files = tiny_deep_files("BTCUSDT")
    models = {s: {**files, "meta.json": tiny_deep_files(s)["meta.json"]} for s in SYMBOLS}
    write_published(home, pl.DataFrame(rows), models)


def _store(home, market: pl.DataFrame, upto: int) -> None:
    """Store bars 0 .. upto - 1 of every symbol (stored bars are kept on upsert)."""
    store = ParquetStore(home)
    for sym in SYMBOLS:
        bars = market.filter((pl.col("symbol") == sym) & (pl.col("timestamp") < _bar(upto)))
        store.upsert_ohlcv(sym, bars)


def _report(home) -> None:
    """The walk-forward test metrics of each symbol, as ``model_report`` writes them."""
    for sym in SYMBOLS:
        path = report_json(home, sym)
        path.parent.mkdir(parents=True, exist_ok=True)
        models = {m: {"auc": WF_AUC, "log_loss": 0.69} for m in ("deep", "lgbm", "ensemble")}
        path.write_text(json.dumps({"symbols": {sym: {"n_test": 4000, "models": models}}}))


def _materialize(settings: Settings, instance) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [live_scores, live_skill_within_noise_band],
        resources={"trading": TradingResource(settings)},
        instance=instance,
    )
    assert result.success
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory, market, up):
    """Bars 0..19 stored, bars 5..19 published; then a bar stored and published per step."""
    home = tmp_path_factory.mktemp("live_home")
    env = {
        "LEVIBOT_HOME": str(home),
        "LEVIBOT_LABEL_HORIZON": str(H),
        "LEVIBOT_FEE_BPS": "0",
        "LEVIBOT_SLIPPAGE_BPS": "0",
    }
    settings = Settings.from_env(env)
    _store(home, market, 20)
    for i in range(FIRST_PUBLISHED, 20):
        _publish(home, i, up)
    _report(home)
    out = {"home": home, "settings": settings, "steps": []}
    with dg.instance_for_test() as instance:
        with serving(create_app(settings)) as base:
            out["before"] = _families(base)
            out["first"] = _materialize(settings, instance)
            out["files_after_first"] = sorted(live_scores_dir(home).iterdir())
            out["summary_first"] = read_summary(home)
            out["second"] = _materialize(settings, instance)
            out["files_after_second"] = sorted(live_scores_dir(home).iterdir())
            out["summary_second"] = read_summary(home)
            for k in range(20, N_BARS):
                _store(home, market, k + 1)
                _publish(home, k, up)
                if k == 21:  # republished later with the opposite probabilities
                    _publish(home, k, up, flip=True, late=60_000)
                out["steps"].append(_materialize(settings, instance))
            out["after"] = _families(base)
            out["text"] = _get(base)
    return out


def _get(base: str) -> str:
    import requests

    r = requests.get(f"{base}/metrics/prom", timeout=10)
    assert r.status_code == 200, r.text
    return r.text


def _families(base: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(_get(base))}


def _meta(result: dg.ExecuteInProcessResult) -> dict:
    return result.asset_materializations_for_node("live_scores")[0].metadata


def test_scores_fill_in_as_labels_mature(run):
    matured_first = 20 - H - FIRST_PUBLISHED  # bars 5..17 have bar t + 2 stored
    meta = _meta(run["first"])
    assert meta["new_rows"].value == len(SYMBOLS) * matured_first
    assert meta["n_matured"].value == dict.fromkeys(SYMBOLS, matured_first)
    assert len(run["files_after_first"]) == 1
    steps = [_meta(r) for r in run["steps"]]
    assert [m["new_rows"].value for m in steps] == [len(SYMBOLS)] * len(steps)  # bar k - H
    assert [m["n_matured"].value["ETHUSDT"] for m in steps] == [
        matured_first + j + 1 for j in range(len(steps))
    ]
    scored = read_scores(run["home"])
    assert scored.height == len(SYMBOLS) * (N_BARS - H - FIRST_PUBLISHED)
    assert scored.select("symbol", "bar_time").is_duplicated().sum() == 0
    assert len(list(live_scores_dir(run["home"]).iterdir())) == 1 + len(steps)


def test_second_run_adds_nothing(run):
    assert _meta(run["second"])["new_rows"].value == 0
    assert run["files_after_second"] == run["files_after_first"]
    first, second = run["summary_first"], run["summary_second"]
    assert first["symbols"] == second["symbols"]
    assert str(_meta(run["second"])["scores_file"].value) == "(none new)"


def test_scored_rows_are_the_first_publish_and_the_training_label(run, market, up):
    scored = read_scores(run["home"])
    row = scored.filter((pl.col("symbol") == "SOLUSDT") & (pl.col("bar_time") == _bar(21)))
    assert row.height == 1  # republished with flipped p: the first publish is scored
    first_good = 0.7 if up[("SOLUSDT", 21)] else 0.3
    assert row["lgbm_p_up"][0] == first_good
    close = market.filter(pl.col("symbol") == "SOLUSDT").sort("timestamp")["close"]
    assert row["fwd_ret"][0] == pytest.approx(math.log(close[21 + H] / close[21]))
    assert row["y_up"][0] == int(up[("SOLUSDT", 21)]) and row["horizon"][0] == H
    assert row["outcome_time"][0] == _bar(21 + H)


def test_summary_scores_pnl_and_the_check_warns(run, market):
    summary = read_summary(run["home"])
    assert (summary["window"], summary["horizon"]) == (500, H)
    for sym in SYMBOLS:
        models = summary["symbols"][sym]["models"]
        assert models["deep"]["auc"] == 0.0 and models["lgbm"]["auc"] == 1.0
        assert models["ensemble"]["auc"] == 0.5 and models["ensemble"]["ic"] is None
        assert models["lgbm"]["brier"] == pytest.approx(0.09)  # always 0.7 on the right side
        assert models["deep"]["below"] and not models["lgbm"]["below"]
        assert not models["ensemble"]["below"]  # 0.5 is inside a small sample's band
        assert models["deep"]["wf_auc"] == WF_AUC
    # BTC long 1.0 from open(6) (decided at bar 5, the window's oldest bar), no costs.
    btc = market.filter(pl.col("symbol") == "BTCUSDT").sort("timestamp")
    expected = btc["close"][N_BARS - 1] / btc["open"][FIRST_PUBLISHED + 1] - 1
    assert summary["symbols"]["BTCUSDT"]["paper_pnl_ratio"] == pytest.approx(expected)
    assert summary["symbols"]["ETHUSDT"]["paper_pnl_ratio"] == 0.0
    (check,) = run["steps"][-1].get_asset_check_evaluations()
    assert check.check_name == "live_skill_within_noise_band"
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["compared"].value == 3 * len(SYMBOLS)
    below = check.metadata["below"].value
    assert below.count("| deep |") == len(SYMBOLS) and "| lgbm |" not in below
    meta = _meta(run["steps"][-1])
    assert "rolling_auc_BTCUSDT" in meta and "| ensemble |" in meta["scores"].value


def test_metrics_are_served_from_the_summary(run):
    assert not set(run["before"]) & set(LIVE_METRIC_NAMES)  # nothing scored yet: absent
    fam, summary = run["after"], read_summary(run["home"])
    assert set(LIVE_METRIC_NAMES) <= set(fam)
    auc = {
        (s.labels["symbol"], s.labels["model"]): s.value for s in fam["levibot_live_auc"].samples
    }
    assert auc[("ETHUSDT", "lgbm")] == 1.0 and auc[("ETHUSDT", "deep")] == 0.0
    n = {s.labels["symbol"]: s.value for s in fam["levibot_live_matured_bars"].samples}
    assert n == dict.fromkeys(SYMBOLS, float(N_BARS - H - FIRST_PUBLISHED))
    ic = {(s.labels["symbol"], s.labels["model"]) for s in fam["levibot_live_ic"].samples}
    assert ("BTCUSDT", "ensemble") not in ic  # undefined (a constant p): absent, not NaN
    pnl = {s.labels["symbol"]: s.value for s in fam["levibot_live_paper_pnl_ratio"].samples}
    assert pnl["BTCUSDT"] == pytest.approx(summary["symbols"]["BTCUSDT"]["paper_pnl_ratio"])
    if PROMTOOL is not None:
        done = subprocess.run(
            [PROMTOOL, "check", "metrics"],
            input=run["text"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_corrupt_files_are_named(tmp_path):
    bad = live_scores_dir(tmp_path) / "scores-1-deadbeef.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PAR1 not parquet")
    with pytest.raises(LiveFileError, match="scores-1-deadbeef.parquet"):
        read_scores(tmp_path)
    path = live_summary_path(tmp_path)
    path.write_text('{"updated_at": 1, "win')
    with pytest.raises(LiveFileError, match="summary.json is not valid JSON"):
        read_summary(tmp_path)
    with pytest.raises(LiveFileError, match="keys"):
        parse_summary("[]", "x.json")
    doc = {"updated_at": 1, "window": 5, "horizon": 1, "symbols": {"BTCUSDT": {"models": []}}}
    with pytest.raises(LiveFileError, match="x.json: 'symbols' must map"):
        parse_summary(json.dumps(doc), "x.json")
    # The API still answers, without the live gauges, while the summary is unreadable.
    with serving(create_app(Settings(home=tmp_path))) as base:
        fam = _families(base)
    assert "levibot_predictions_available" in fam and not set(fam) & set(LIVE_METRIC_NAMES)


def test_live_auc_figure_draws_the_test_auc_in_each_models_colour():
    times = np.array([_bar(i) for i in range(3)])
    curves = {"deep": np.array([0.5, 0.55, 0.6]), "lgbm": np.array([0.5, 0.5, 0.52])}
    fig = live_auc_figure(times, curves, {"deep": 0.58, "lgbm": None})
    lines = {str(line.get_label()): line for line in fig.axes[0].get_lines()}
    flat = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(flat) == 1 and list(flat[0].get_ydata()) == [0.58, 0.58]
    assert flat[0].get_color() == lines["deep"].get_color()
    dotted = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert [list(line.get_ydata()) for line in dotted] == [[0.5, 0.5]]  # no skill
