"""The walk-forward backtest: predictions on test bars, traded on the candle grid."""

import numpy as np
import polars as pl
import pytest

from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel
from levibot_pipelines.core.trading.policy import PolicyConfig
from levibot_pipelines.core.trading.prediction_backtest import align_bars, backtest_predictions

TF = 900_000
N = 300


def _bars(close: np.ndarray) -> pl.DataFrame:
    # Open at the previous close; wicks 0.1% beyond the body (never near a 1% stop).
    open_ = np.r_[close[0], close[:-1]]
    return pl.DataFrame(
        {
            "timestamp": np.arange(len(close), dtype=np.int64) * TF,
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
        }
    )


def _features(n: int, skip: slice | None = None) -> pl.DataFrame:
    f = pl.DataFrame(
        {
            "timestamp": np.arange(n, dtype=np.int64) * TF,
            "vol_20": np.full(n, 0.002),
            "ret_1": np.zeros(n),
        }
    )
    if skip is not None:
        f = f.filter(~pl.int_range(n).is_between(skip.start, skip.stop - 1))
    return f


def _pred(rows: np.ndarray, p: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": rows.astype(np.int64) * TF,
            "p_ensemble": p,
            "p_lgbm": p,
            "p_deep": p,
            "conf_lgbm": np.abs(2 * p - 1),
            "conf_deep": np.abs(2 * p - 1),
            "epistemic_p": np.zeros(len(p)),
        }
    )


NO_COSTS = BacktestConfig(costs=CostModel(fee_bps=0.0, slippage_bps=0.0))
# The settings' entry threshold (0.55) and long-only default, without the uncertainty cap.
UNCAPPED = PolicyConfig(base_threshold=0.55, allow_short=False, max_uncertainty=None)


def test_one_confident_bar_trades_next_open_to_the_exit_open():
    close = 100.0 * 1.001 ** np.arange(N)  # +0.1% a bar, opens at the previous close
    rows = np.arange(200, 210)
    # Enter at 200 (0.9 >= 0.55); hold while 0.5 <= p < 0.55; exit signal at 205 (0.3 < 0.5).
    p = np.array([0.9] + [0.52] * 4 + [0.3] + [0.52] * 4)
    bt = backtest_predictions(_pred(rows, p), _bars(close), _features(N), UNCAPPED, NO_COSTS)
    rep = bt.report
    assert rep["n_trades"] == 1 and rep["models"]["lgbm"]["n_trades"] == 1
    # Span: the first test bar (200) to the bar after the last one (210): 11 bars.
    assert rep["n_bars"] == 11 and rep["start_ms"] == 200 * TF and rep["end_ms"] == 210 * TF
    # p = 0.9 -> confidence 0.8; relative volatility 1, no uncertainty, neutral regime (flat
    # ret_1): size = 0.8. Long from open(201) = close(200) to open(206) = close(205): bars 201-205
    # each +0.1% on 0.8 of equity, bar 206 exits at its open (0%): equity = 1.0008^5.
    assert bt.equity["ensemble"][-1] == pytest.approx(1.0008**5)
    assert rep["buy_and_hold"]["total_return"] > rep["total_return"] > 0
    assert rep["flat"]["total_return"] == 0.0 and rep["costs"]["fee_bps"] == 0.0


def test_fees_only_lower_the_result():
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, N)))
    rows = np.arange(100, 290)
    p = np.clip(0.5 + rng.normal(0, 0.08, len(rows)), 0.01, 0.99)
    policy = UNCAPPED
    free = backtest_predictions(_pred(rows, p), _bars(close), _features(N), policy, NO_COSTS)
    paid = backtest_predictions(
        _pred(rows, p),
        _bars(close),
        _features(N),
        policy,
        BacktestConfig(costs=CostModel(fee_bps=10.0, slippage_bps=0.0)),
    )
    assert paid.report["n_trades"] == free.report["n_trades"] > 0
    assert paid.report["total_return"] < free.report["total_return"]
    assert paid.report["costs_paid"] > 0 == free.report["costs_paid"]
    # The gross-of-costs figure is the same trades with no fees: the free run itself.
    assert paid.report["gross_of_costs"]["total_return"] == pytest.approx(
        free.report["total_return"]
    )


def test_fills_follow_the_candles_across_a_feature_gap():
    # Features are missing for bars 150-170 (a gap elsewhere): the candles still exist, so the
    # prediction at 149 fills at open(150), never at the next feature row's open.
    close = np.full(N, 100.0)
    frame = align_bars(
        _pred(np.array([149]), np.array([0.9])), _bars(close), _features(N, slice(150, 171))
    )
    assert frame.height == N
    row150 = frame.filter(pl.col("timestamp") == 150 * TF).row(0, named=True)
    assert row150["p_ensemble"] is None and row150["vol_20"] == 0.002  # carried forward


def test_predictions_without_candles_are_an_error():
    with pytest.raises(ValueError, match="1 prediction bars have no candle"):
        align_bars(
            _pred(np.array([N + 5]), np.array([0.7])), _bars(np.full(N, 100.0)), _features(N)
        )


def test_report_carries_the_reversal_rule_and_the_random_distribution():
    from levibot_pipelines.adapters.reports import backtest_markdown

    # Closes alternate down, up, down... over the span 200-210 (opens at the previous close):
    # the reversal rule (long only) buys after each down bar and sells after the next up bar.
    close = 100.0 * np.where(np.arange(N) % 2 == 0, 1.0, 0.99)
    rows = np.arange(200, 210)
    p = np.array([0.9] + [0.52] * 4 + [0.3] + [0.52] * 4)
    bt = backtest_predictions(_pred(rows, p), _bars(close), _features(N), UNCAPPED, NO_COSTS)
    rep = bt.report
    # Span bars 200..210: down bars (close 99) at the odd 201..209, 5 of them; each long fills
    # at open = 99 and exits at the next open = 100: +1/99 per trade, no costs.
    rev = rep["reversal_rule"]
    assert rev["n_trades"] == 5
    assert rev["total_return"] == pytest.approx((100 / 99) ** 5 - 1)
    for m in (rep, rep["models"]["lgbm"], rep["models"]["deep"]):
        d = m["random_distribution"]
        assert d["n_seeds"] == 200 and d["n_trades"]["q50"] == m["n_trades"] == 1
        assert d["total_return"]["q05"] <= d["total_return"]["q50"] <= d["total_return"]["q95"]
        assert 0.0 <= d["policy_percentile"] <= 1.0
    md = backtest_markdown(rep)
    assert "| reversal rule |" in md and "over 200 seeds" in md
    assert md.count("| ensemble |") == 1 and "| lgbm |" in md and "| deep |" in md
