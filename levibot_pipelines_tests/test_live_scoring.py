"""Live scoring, pure: the label and its maturity, one score per bar, hand-checked scores, the
noise band both ways and the paper P&L (core.evaluation.live_scoring)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from levibot_pipelines.core.evaluation.live_scoring import (
    SCORED_SCHEMA,
    first_published,
    hanley_mcneil_se,
    latest_window,
    newly_matured,
    noise_band,
    outcomes,
    paper_pnl,
    rolling_auc,
    window_scores,
)
from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel

TF = 900_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def bars(closes: list[float], missing: tuple[int, ...] = ()) -> pl.DataFrame:
    """One symbol's bars on the 15m grid from T0, ``missing`` bar indices left out."""
    idx = [i for i in range(len(closes)) if i not in missing]
    return pl.DataFrame(
        {"timestamp": [T0 + i * TF for i in idx], "close": [float(closes[i]) for i in idx]}
    )


def published(bar_index: int, p: float, published_at: int | None = None, symbol="BTCUSDT"):
    t = T0 + bar_index * TF
    return {
        "symbol": symbol,
        "bar_time": t,
        "published_at": t + TF + 30_000 if published_at is None else published_at,
        "deep_p_up": p,
        "lgbm_p_up": 1.0 - p,
        "ensemble_p_up": 0.5,
    }


def history(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame(list(rows)).sort("published_at", "symbol")


NONE_SCORED = pl.DataFrame(schema=SCORED_SCHEMA)


def test_label_is_the_training_label_and_never_spans_a_gap():
    closes = [100.0, 101.0, 99.0, 102.0, 102.0, 104.0]
    out = outcomes(bars(closes), tf_ms=TF, horizon=2)
    # log(close[t+2] / close[t]) for t = 0..3; the last two bars have no label yet.
    assert out["bar_time"].to_list() == [T0 + i * TF for i in range(4)]
    assert out["fwd_ret"].to_list() == pytest.approx(
        [math.log(99 / 100), math.log(102 / 101), math.log(102 / 99), math.log(104 / 102)]
    )
    assert out["y_up"].to_list() == [0, 1, 1, 1]
    assert out["outcome_time"].to_list() == [T0 + (i + 2) * TF for i in range(4)]
    assert out["outcome_close"].to_list() == [99.0, 102.0, 102.0, 104.0]
    # Bar 3 missing: the labels of bars 1 and 2 would span it (bar 0's too: 0 -> 2 is fine).
    gap = outcomes(bars(closes, missing=(3,)), tf_ms=TF, horizon=2)
    assert gap["bar_time"].to_list() == [T0]
    flat = outcomes(bars([100.0, 100.0]), tf_ms=TF, horizon=1)
    assert flat["y_up"].to_list() == [0]  # no move is not up, as in training
    with pytest.raises(ValueError, match="unique timestamps"):
        outcomes(pl.concat([bars(closes), bars(closes)]), tf_ms=TF, horizon=1)


def test_a_prediction_matures_exactly_with_bar_t_plus_h():
    h = 3
    closes = [100.0, 100.5, 101.0, 99.0, 103.0, 102.0]
    hist = history(published(1, 0.7))
    for stored in range(2, 5):  # bars 0 .. stored-1 in the store; bar 1 + 3 = 4 not yet
        got = newly_matured(
            hist, {"BTCUSDT": bars(closes[:stored])}, NONE_SCORED, tf_ms=TF, horizon=h, scored_at=1
        )
        assert got.is_empty(), stored
    got = newly_matured(
        hist, {"BTCUSDT": bars(closes[:5])}, NONE_SCORED, tf_ms=TF, horizon=h, scored_at=7
    )
    assert got.height == 1 and got.columns == list(SCORED_SCHEMA)
    row = got.row(0, named=True)
    assert row["bar_time"] == T0 + TF and row["outcome_time"] == T0 + 4 * TF
    assert row["fwd_ret"] == pytest.approx(math.log(103.0 / 100.5)) and row["y_up"] == 1
    assert (row["deep_p_up"], row["horizon"], row["scored_at"]) == (0.7, 3, 7)


def test_each_bar_is_scored_once_from_its_first_publish():
    closes = [100.0, 101.0, 102.0, 101.0]
    # Bar 1 published at 2 times; the republish (later, other p) is not what was said first.
    hist = history(
        published(1, 0.7), published(1, 0.2, published_at=T0 + 9 * TF), published(0, 0.6)
    )
    assert first_published(hist).sort("bar_time")["deep_p_up"].to_list() == [0.6, 0.7]
    store = {"BTCUSDT": bars(closes), "ETHUSDT": bars(closes[:1])}
    first = newly_matured(hist, store, NONE_SCORED, tf_ms=TF, horizon=1, scored_at=1)
    assert first["bar_time"].to_list() == [T0, T0 + TF]
    assert first["deep_p_up"].to_list() == [0.6, 0.7]
    again = newly_matured(hist, store, first, tf_ms=TF, horizon=1, scored_at=2)
    assert again.is_empty()
    # A later republish of an already scored bar, even the first for it in a new file, adds
    # nothing; another horizon is another score.
    later = pl.concat([hist, history(published(0, 0.1, published_at=T0 + 20 * TF))])
    assert newly_matured(later, store, first, tf_ms=TF, horizon=1, scored_at=3).is_empty()
    other_h = newly_matured(hist, store, first, tf_ms=TF, horizon=2, scored_at=3)
    assert other_h["bar_time"].to_list() == [T0, T0 + TF]


def _scored(y: list[int], p: list[float], r: list[float]) -> pl.DataFrame:
    n = len(y)
    return pl.DataFrame(
        {
            "symbol": ["BTCUSDT"] * n,
            "bar_time": [T0 + i * TF for i in range(n)],
            "horizon": [1] * n,
            "published_at": [T0 + (i + 1) * TF for i in range(n)],
            "outcome_time": [T0 + (i + 1) * TF for i in range(n)],
            "close": [100.0] * n,
            "outcome_close": [100.0] * n,
            "fwd_ret": r,
            "y_up": y,
            "deep_p_up": p,
            "lgbm_p_up": [0.5] * n,
            "ensemble_p_up": [1.0 - v for v in p],
            "scored_at": [0] * n,
        },
        schema=SCORED_SCHEMA,
    )


def test_window_scores_by_hand():
    y, p = [1, 0, 1, 0], [0.8, 0.3, 0.4, 0.6]
    r = [0.02, -0.01, 0.005, -0.03]
    s = window_scores(_scored(y, p, r))
    deep = s["deep"]
    assert (deep["n"], deep["n_up"]) == (4, 2)
    # up bars (0.8, 0.4) above down bars (0.3, 0.6): 0.8>0.3, 0.8>0.6, 0.4>0.3; not 0.4>0.6.
    assert deep["auc"] == pytest.approx(3 / 4)
    assert deep["log_loss"] == pytest.approx(
        -(math.log(0.8) + math.log(0.7) + math.log(0.4) + math.log(0.4)) / 4
    )
    assert deep["brier"] == pytest.approx((0.04 + 0.09 + 0.36 + 0.36) / 4)
    assert deep["ece"] == pytest.approx((0.2 + 0.3 + 0.6 + 0.6) / 4)  # one bar per bin
    # ranks of p (4, 1, 2, 3) and of r (4, 2, 3, 1): d = (0, -1, -1, 2), 1 - 6 * 6 / 60
    assert deep["ic"] == pytest.approx(0.4)
    assert s["ensemble"]["auc"] == pytest.approx(1 / 4)
    assert s["lgbm"]["auc"] == pytest.approx(0.5) and s["lgbm"]["ic"] is None  # constant p
    one_class = window_scores(_scored([1, 1], [0.6, 0.7], [0.01, 0.02]))["deep"]
    assert one_class["auc"] is None and one_class["brier"] == pytest.approx((0.16 + 0.09) / 2)
    empty = window_scores(_scored([], [], []))["deep"]
    assert empty["n"] == 0 and empty["auc"] is None and empty["log_loss"] is None


def test_latest_window_and_rolling_auc():
    y, p = [1, 1, 0, 1, 0], [0.9, 0.6, 0.7, 0.8, 0.1]
    rows = _scored(y, p, [0.01] * 5)
    assert latest_window(rows, "BTCUSDT", 1, 3)["bar_time"].to_list() == [
        T0 + i * TF for i in (2, 3, 4)
    ]
    assert latest_window(rows, "BTCUSDT", 2, 3).is_empty()
    times, curves = rolling_auc(rows, window=3, min_bars=2)
    # Bar 1's window (1, 1) has one class: left out. Bar 2: (0.9, 0.6 up; 0.7 down) -> 1/2;
    # bar 3: (0.6, 0.8 up; 0.7 down) -> 1/2; bar 4: (0.8 up; 0.7, 0.1 down) -> 1.
    assert times.tolist() == [T0 + i * TF for i in (2, 3, 4)]
    assert curves["deep"].tolist() == pytest.approx([0.5, 0.5, 1.0])
    assert curves["ensemble"].tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_hanley_mcneil_standard_error_by_hand():
    # A = 0.5: Q1 = Q2 = 1/3, Q - A^2 = 1/12; SE^2 = (0.25 + 2 * 49 / 12) / 2500
    assert hanley_mcneil_se(0.5, 50, 50) == pytest.approx(math.sqrt((0.25 + 98 / 12) / 2500))
    assert hanley_mcneil_se(0.5, 50, 50) == pytest.approx(0.058023, abs=1e-6)
    # A = 0.6: Q1 = 0.6 / 1.4, Q2 = 0.72 / 1.6 = 0.45
    var = (0.24 + 499 * (0.6 / 1.4 - 0.36) + 499 * (0.45 - 0.36)) / 500**2
    assert hanley_mcneil_se(0.6, 500, 500) == pytest.approx(math.sqrt(var))
    assert hanley_mcneil_se(1.0, 10, 10) == 0.0
    with pytest.raises(ValueError, match="n_pos"):
        hanley_mcneil_se(0.5, 0, 10)


def test_noise_band_rule_both_ways():
    se_wf = hanley_mcneil_se(0.6, 500, 500)  # 0.017818
    # 100 live bars at AUC 0.5 against a test AUC of 0.6 on 1000 bars: inside the band.
    small = noise_band(0.5, 50, 50, wf_auc=0.6, wf_n=1000, horizon=1)
    assert small.band == pytest.approx(1.96 * math.sqrt(0.058023**2 + se_wf**2), abs=1e-5)
    assert small.band == pytest.approx(0.11897, abs=1e-4) and not small.below
    assert small.threshold == pytest.approx(0.6 - small.band)
    # 1000 live bars at the same AUC: the band narrows to 0.0500 and 0.5 is below 0.5500.
    big = noise_band(0.5, 500, 500, wf_auc=0.6, wf_n=1000, horizon=1)
    assert big.live_se == pytest.approx(math.sqrt((0.25 + 998 / 12) / 500**2))
    assert big.band == pytest.approx(0.050015, abs=1e-5) and big.below
    # Overlapping 4-bar labels: twice the band (sqrt(4)), and 0.5 is no longer below.
    overlap = noise_band(0.5, 500, 500, wf_auc=0.6, wf_n=1000, horizon=4)
    assert overlap.band == pytest.approx(2 * big.band) and not overlap.below
    # Live skill above the test skill is never "below".
    assert not noise_band(0.7, 500, 500, wf_auc=0.6, wf_n=1000, horizon=1).below


def _candles(opens: list[float], closes: list[float]) -> pl.DataFrame:
    n = len(opens)
    return pl.DataFrame(
        {
            "timestamp": [T0 + i * TF for i in range(n)],
            "open": opens,
            "high": [max(o, c) for o, c in zip(opens, closes, strict=True)],
            "low": [min(o, c) for o, c in zip(opens, closes, strict=True)],
            "close": closes,
        }
    )


def _decision(i: int, signal: str, size: float, published_at: int | None = None) -> dict:
    return {
        "bar_time": T0 + i * TF,
        "published_at": T0 + (i + 1) * TF if published_at is None else published_at,
        "signal": signal,
        "size": size,
        "close": 100.0,
        "stop_loss": None,
        "take_profit": None,
    }


def test_paper_pnl_replays_the_published_book():
    candles = _candles([100, 100, 110, 121], [100, 110, 121, 121])
    free = BacktestConfig(costs=CostModel(fee_bps=0.0, slippage_bps=0.0))
    # Long 1.0 decided at bar 0 fills at open(1) = 100: +10% in bar 1, +10% in bar 2.
    hist = pl.DataFrame([_decision(0, "ENTRY_LONG", 1.0), _decision(1, "HOLD", 0.0)])
    assert paper_pnl(candles, hist, T0, free) == pytest.approx(0.21)
    assert paper_pnl(candles, hist, T0 + TF, free) == pytest.approx(121 / 110 - 1)
    assert paper_pnl(candles, hist, T0 + 99 * TF, free) is None
    # The fee of the entry leg (10 bps of the 1.0 notional) comes off bar 1's return:
    # (1.10 - 0.001) * 1.10; the position is still open, so no exit leg is paid yet.
    fee = BacktestConfig(costs=CostModel(fee_bps=10.0, slippage_bps=0.0))
    assert paper_pnl(candles, hist, T0, fee) == pytest.approx((1.10 - 0.001) * 1.10 - 1)
    # A bar published twice counts its latest publish, as the publisher replays it.
    redo = pl.concat([hist, pl.DataFrame([_decision(0, "HOLD", 0.0, published_at=T0 + 5 * TF)])])
    assert paper_pnl(candles, redo, T0, free) == pytest.approx(0.0)
    assert paper_pnl(candles.head(0), hist, T0, free) is None
    assert paper_pnl(candles, hist.head(0), T0, free) is None  # no book before the newest bar
