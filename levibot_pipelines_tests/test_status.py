"""``usecases.status``: what ``levibot demo``/``status`` show, on files written by hand in a
temporary home, checked against hand-computed values."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from levibot_pipelines.adapters.home import ensemble_weights_path, published_dir, report_json
from levibot_pipelines.adapters.prediction_files import SCHEMA_VERSION
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.usecases import status
from levibot_pipelines_tests.conftest import synthetic_long
from levibot_pipelines_tests.test_prediction_files import BAR, SYMBOLS, TF_MS, make_row

METRICS = {"auc": 0.55126, "log_loss": 0.69, "brier": 0.24841, "bss": -0.00126, "ece": 0.03}


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def write_report(home: Path, symbol: str, backtest: dict | None = None) -> None:
    """A ``report.json`` with two models (one extra key each, not shown) and maybe a backtest."""
    rep = {
        "n_test": 200,
        "folds": 1,
        "models": {"lgbm": {**METRICS, "n": 200}, "deep": {**METRICS, "auc": 0.5, "n": 200}},
    }
    if backtest is not None:
        rep["backtest"] = backtest
    write_json(report_json(home, symbol), {"symbols": {symbol: rep}})


def bt_entry(sharpe: float, n_trades: int = 2) -> dict:
    return {
        "sharpe": sharpe,
        "psr": 0.5,
        "max_drawdown": 0.01,
        "n_trades": n_trades,
        "costs_paid": 0.0007,
        "total_return": 0.00126,
    }


def test_data_status_counts_bars_and_measures_staleness_in_data_time(tmp_path):
    store = ParquetStore(tmp_path)
    bars = synthetic_long(3, start_ms=BAR).filter(pl.col("symbol") == "BTCUSDT")
    store.upsert_ohlcv("BTCUSDT", bars)
    store.features_path.parent.mkdir(parents=True)
    pl.DataFrame({"timestamp": [BAR + i * TF_MS for i in range(3)] * 2}).write_parquet(
        store.features_path
    )
    # Newest bar opens at 00:30, so the first missing bar (00:45) closed at 01:00; now is
    # 01:15 + 90 s: 16.5 minutes stale in data time.
    now = BAR + 5 * TF_MS + 90_000
    table = status.data_status(store, ["BTCUSDT", "ETHUSDT"], TF_MS, now)
    assert table.columns == status.STATUS_COLUMNS
    assert table.rows() == [
        ("ohlcv[BTCUSDT]", 3, "2026-01-01 00:30 UTC", 16.5),
        ("ohlcv[ETHUSDT]", 0, "-", math.inf),
        ("cross_asset_features", 6, "2026-01-01 00:30 UTC", 16.5),
    ]
    # Until its successor (00:45) closes at 01:00, the 00:30 bar is the newest closed: 0.
    fresh = status.data_status(store, ["BTCUSDT"], TF_MS, BAR + 4 * TF_MS - 1)
    assert fresh["staleness_min"].to_list() == [0.0, 0.0]


def test_data_status_without_a_feature_table_lists_only_the_bars(tmp_path):
    table = status.data_status(ParquetStore(tmp_path), ["SOLUSDT"], TF_MS, BAR)
    assert table["asset"].to_list() == ["ohlcv[SOLUSDT]"]


def test_model_status_reads_the_report_and_the_ensemble_weights(tmp_path):
    write_report(tmp_path, "BTCUSDT")
    write_json(
        ensemble_weights_path(tmp_path, "BTCUSDT"),
        {"lgbm_version": "2", "deep_version": "3", "w_lgbm": 0.4},
    )
    write_report(tmp_path, "ETHUSDT")  # reported, but no ensemble fitted yet
    out = status.model_status(tmp_path, SYMBOLS)
    assert list(out) == list(SYMBOLS)
    btc, eth = out["BTCUSDT"], out["ETHUSDT"]
    assert out["SOLUSDT"] is None
    assert (btc.n_test, btc.folds, btc.lgbm_version, btc.deep_version, btc.w_lgbm) == (
        200,
        1,
        "2",
        "3",
        0.4,
    )
    assert btc.metrics.columns == ["model", *status.METRIC_COLUMNS]
    assert btc.metrics.rows() == [
        ("lgbm", 0.5513, 0.69, 0.2484, -0.0013, 0.03),
        ("deep", 0.5, 0.69, 0.2484, -0.0013, 0.03),
    ]
    assert (eth.lgbm_version, eth.deep_version) == ("?", "?") and math.isnan(eth.w_lgbm)


def test_backtest_table_one_row_per_strategy_in_order(tmp_path):
    bt = {
        **bt_entry(0.87684),
        "gross_of_costs": bt_entry(6.8),
        "at_2x_costs": bt_entry(-4.7),
        "random_same_turnover": bt_entry(8.9),
        "buy_and_hold": bt_entry(13.2, n_trades=1),
    }
    write_report(tmp_path, "BTCUSDT", backtest=bt)
    write_report(tmp_path, "ETHUSDT")  # no backtest in its report: left out
    table = status.backtest_table(tmp_path, SYMBOLS)
    assert table.columns == ["symbol", "strategy", *status.BACKTEST_COLUMNS, "total_return"]
    assert table["strategy"].to_list() == [
        "policy (ensemble)",
        "  gross of costs",
        "  at 2x costs",
        "  random, same turnover",
        "buy and hold",
    ]
    assert set(table["symbol"]) == {"BTCUSDT"}
    assert table.row(0) == ("BTCUSDT", "policy (ensemble)", 0.8768, 0.5, 0.01, 2, 0.0007, 0.0013)
    assert table["sharpe"].to_list() == [0.8768, 6.8, -4.7, 8.9, 13.2]
    assert table["n_trades"].dtype == pl.Int64 and table["n_trades"][-1] == 1


def test_nothing_to_show_on_an_empty_home(tmp_path):
    assert status.backtest_table(tmp_path, SYMBOLS) is None
    assert status.published_status(tmp_path) is None
    assert status.model_status(tmp_path, SYMBOLS) == dict.fromkeys(SYMBOLS)


def test_published_status_one_row_per_symbol_and_distinct_reasons(tmp_path):
    rows = [
        make_row("BTCUSDT", kill_switch="REDUCING", kill_switch_reason="drawdown 5.0%"),
        make_row("ETHUSDT", kill_switch="REDUCING", kill_switch_reason="drawdown 5.0%"),
        make_row("SOLUSDT", kill_switch_reason="", deep_p_up=0.123456),
    ]
    path = published_dir(tmp_path) / "latest_predictions.json"
    write_json(
        path, {"published_at": BAR + TF_MS + 30_000, "schema_version": SCHEMA_VERSION, "rows": rows}
    )
    out = status.published_status(tmp_path)
    assert out.path == path
    assert out.kill_switch_reasons == ["drawdown 5.0%"]
    assert out.table.columns == ["symbol", "as_of", *status.PREDICTION_COLUMNS]
    assert out.table["symbol"].to_list() == list(SYMBOLS)
    # as_of is the close of the bar opened at 00:00, naive UTC as the CLI always printed it
    assert out.table["as_of"].to_list() == [datetime(2026, 1, 1, 0, 15)] * 3
    assert out.table["deep_p_up"][2] == pytest.approx(0.1235)
    assert out.table["kill_switch"].to_list() == ["REDUCING", "REDUCING", "ACTIVE"]
    # What the decision engine published, and why.
    assert out.table["decision_model"].to_list() == ["ensemble", "flat", "lgbm"]
    assert out.decision_reasons["ETHUSDT"] == "no validated edge after costs"
    assert list(out.decision_reasons) == list(SYMBOLS)
