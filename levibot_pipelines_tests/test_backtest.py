"""The backtest engine: hand-computed trades, execution rules, a bar-by-bar reference model,
look-ahead, costs, baselines, metrics and errors."""

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from levibot_pipelines.core.trading.backtest import (
    Action,
    BacktestConfig,
    CostModel,
    Signals,
    run_backtest,
)
from levibot_pipelines.core.trading.baselines import (
    buy_and_hold_signals,
    compare,
    flat_signals,
    random_signals,
)
from levibot_pipelines.core.trading.performance import backtest_metrics

TF = 900_000
FREE = BacktestConfig(costs=CostModel(fee_bps=0.0, slippage_bps=0.0))
# The settings' defaults (LEVIBOT_FEE_BPS, LEVIBOT_SLIPPAGE_BPS): 10 bps fee and 2 bps slippage
# per side.
COSTS = CostModel(fee_bps=10.0, slippage_bps=2.0)
DEFAULTS = BacktestConfig(costs=COSTS)
FEE, SLIP = 0.001, 0.0002  # COSTS as fractions


def bars(close, open_=None, high=None, low=None):
    """(timestamps, open, high, low, close); open defaults to the previous close (the first to
    the first close), high/low to the body."""
    c = np.asarray(close, dtype=float)
    o = np.r_[c[0], c[:-1]] if open_ is None else np.asarray(open_, dtype=float)
    h = np.maximum(o, c) if high is None else np.asarray(high, dtype=float)
    lo = np.minimum(o, c) if low is None else np.asarray(low, dtype=float)
    return np.arange(c.size, dtype=np.int64) * TF, o, h, lo, c


def signals(n, entries=(), exit_long=(), exit_short=()):
    """``entries``: (t, side, size, stop_pct, take_profit_pct) tuples."""
    s = flat_signals(n)
    for t, side, size, stop, tp in entries:
        s.entry_side[t], s.size[t], s.stop_pct[t], s.take_profit_pct[t] = side, size, stop, tp
    s.exit_long[list(exit_long)] = True
    s.exit_short[list(exit_short)] = True
    return s


def trade(result, i=0):
    return result.trades.row(i, named=True)


def test_flat_signals_give_a_flat_equity_curve():
    p = bars([100, 101, 99, 102, 98])
    res = run_backtest(*p, flat_signals(5), DEFAULTS)
    np.testing.assert_array_equal(res.returns, 0.0)
    np.testing.assert_array_equal(res.equity, 1.0)
    np.testing.assert_array_equal(res.position, 0.0)
    assert res.trades.height == 0 and res.costs_paid == 0.0 and not res.open_position_at_end
    assert np.isnan(res.stop_level).all() and (res.action == Action.HOLD).all()


def test_single_long_trade_by_hand():
    # Long size 1 decided at close(0), exit decided at close(2); default costs.
    p = bars([101, 102, 104, 103, 105], open_=[100, 101, 103, 104, 102])
    res = run_backtest(*p, signals(5, [(0, 1, 1.0, np.nan, np.nan)], exit_long=[2]), DEFAULTS)
    entry = 101 * 1.0002  # open(1) plus 2 bps = 101.0202
    exit_ = 104 * 0.9998  # open(3) minus 2 bps = 103.9792
    expected = [
        0.0,
        102 / entry - 1 - FEE,  # 0.009701 - 0.001 = 0.008701
        104 / 102 - 1,  # 0.019608
        exit_ / 104 - 1 - FEE,  # from close(2) = 104: -0.0002 - 0.001 = -0.0012
        0.0,  # flat
    ]
    np.testing.assert_allclose(res.returns, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.equity, np.cumprod(1 + np.array(expected)))
    np.testing.assert_array_equal(res.position, [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(res.action, [Action.ENTRY_LONG, 0, Action.EXIT, 0, 0])
    t = trade(res)
    assert (t["entry_ts"], t["exit_ts"], t["side"], t["bars_held"]) == (TF, 3 * TF, 1, 2)
    assert t["entry_price"] == pytest.approx(101.0202) and t["exit_price"] == pytest.approx(
        103.9792
    )
    assert t["exit_reason"] == "signal"
    # Gross: 104 / 101 - 1 = 0.029703; costs 2 legs x (10 + 2 bps) = 0.0024.
    assert t["gross_return"] == pytest.approx(104 / 101 - 1)
    assert t["costs"] == pytest.approx(0.0024) and res.costs_paid == pytest.approx(0.0024)
    assert t["net_return"] == pytest.approx(res.equity[-1] - 1)
    assert t["net_return"] < t["gross_return"] - 0.0023


def test_half_size_scales_each_bar():
    # Size 0.5, no costs: bar 1 earns 0.5 * (102/101 - 1), bar 2 0.5 * (104/102 - 1).
    p = bars([101, 102, 104, 104], open_=[100, 101, 103, 104])
    res = run_backtest(*p, signals(4, [(0, 1, 0.5, np.nan, np.nan)], exit_long=[2]), FREE)
    np.testing.assert_allclose(res.returns, [0, 0.5 * (102 / 101 - 1), 0.5 * (104 / 102 - 1), 0])


def _one_trade(side, low, high, open_=None, stop=0.02, tp=0.03, cfg=FREE):
    """Entry decided at close(0), fills at open(1) = 100; bar 2 has the given range (and
    closes at 100 clipped into it)."""
    close = [100, 100, min(max(100, low), high), 100]
    o = [100, 100, 100 if open_ is None else open_, 100]
    h = [100, 100.5, high, 100]
    lo = [100, 99.5, low, 100]
    res = run_backtest(*bars(close, o, h, lo), signals(4, [(0, side, 1.0, stop, tp)]), cfg)
    return res, trade(res)


def test_stop_hit_fills_at_the_stop():
    # Long fill 100, stop 2% -> 98; bar 2 trades down to 97.5: out at 98, -2%.
    res, t = _one_trade(1, low=97.5, high=100.5)
    assert (t["exit_reason"], t["exit_price"], t["exit_ts"]) == ("stop", 98.0, 2 * TF)
    assert res.returns[2] == pytest.approx(98 / 100 - 1)
    np.testing.assert_array_equal(res.position, [0, 1, 0, 0])
    assert res.stop_level[1] == 98.0 and res.take_profit_level[1] == 103.0
    assert np.isnan(res.stop_level[2])


def test_take_profit_hit_fills_at_the_level():
    # Take-profit 3% -> 103; bar 2 trades up to 103.5: out at 103, +3%.
    res, t = _one_trade(1, low=99.5, high=103.5)
    assert (t["exit_reason"], t["exit_price"]) == ("take_profit", 103.0)
    assert res.equity[-1] == pytest.approx(1.03)


def test_stop_and_take_profit_in_one_bar_assume_the_stop():
    _, t = _one_trade(1, low=97.0, high=104.0)
    assert (t["exit_reason"], t["exit_price"]) == ("stop", 98.0)


def test_gaps_fill_at_the_open():
    # Bar 2 opens at 96, below the 98 stop: the fill is the worse open.
    _, t = _one_trade(1, low=95.0, high=96.5, open_=96.0)
    assert (t["exit_reason"], t["exit_price"]) == ("stop", 96.0)
    # Bar 2 opens at 105, above the 103 take-profit: the fill is the better open.
    _, t = _one_trade(1, low=104.0, high=106.0, open_=105.0)
    assert (t["exit_reason"], t["exit_price"]) == ("take_profit", 105.0)


def test_stop_inside_the_fill_bar():
    # Entry fills at open(1) = 100 and bar 1 falls to 97: stopped at 98 in the fill bar; both
    # fees in that bar: 98/100 - 1 - 2 * 0.001 = -0.022 (no slippage here).
    p = bars([100, 99, 99], open_=[100, 100, 99], high=[100, 100, 99], low=[100, 97, 99])
    cfg = BacktestConfig(costs=CostModel(fee_bps=10.0, slippage_bps=0.0))
    res = run_backtest(*p, signals(3, [(0, 1, 1.0, 0.02, np.nan)]), cfg)
    t = trade(res)
    assert (t["exit_reason"], t["bars_held"], t["exit_ts"]) == ("stop", 0, TF)
    assert res.returns[1] == pytest.approx(-0.022)
    assert t["net_return"] == pytest.approx(-0.022)
    np.testing.assert_array_equal(res.position, [0, 0, 0])


def test_short_trades_are_mirrored():
    # Short fill 100 (no costs), price falls 100 -> 97 -> 95 and the short earns each bar:
    # bar 2 -(97/100 - 1) = 0.03, bar 3 -(95/97 - 1) = 0.020619 (the per-bar formula keeps the
    # short at a constant fraction of equity), so equity 1.03 * 1.020619 = 1.051237.
    p = bars([100, 100, 97, 95, 95])
    res = run_backtest(*p, signals(5, [(0, -1, 1.0, np.nan, np.nan)], exit_short=[3]), FREE)
    t = trade(res)
    assert (t["side"], t["exit_reason"], t["exit_price"]) == (-1, "signal", 95.0)
    np.testing.assert_allclose(res.returns[1:4], [0.0, 0.03, -1 * (95 / 97 - 1)])
    assert res.equity[-1] == pytest.approx(1.03 * (1 + 2 / 97))
    assert t["net_return"] == pytest.approx(res.equity[-1] - 1)
    np.testing.assert_array_equal(res.position, [0, -1, -1, -1, 0])
    # The short's stop is above (103) and its take-profit below (97): bar 2 low 97 -> +3%.
    _, t = _one_trade(-1, low=96.0, high=100.5)
    assert (t["exit_reason"], t["exit_price"]) == ("take_profit", 97.0)
    _, t = _one_trade(-1, low=99.5, high=102.5, stop=0.02)
    assert (t["exit_reason"], t["exit_price"]) == ("stop", 102.0)
    _, t = _one_trade(-1, low=103.5, high=105.0, open_=104.0, stop=0.02)
    assert (t["exit_reason"], t["exit_price"]) == ("stop", 104.0)  # gap above the stop


def test_short_costs_are_mirrored():
    # A short entry sells at open * (1 - slip): 100 * 0.9998 = 99.98; the exit buys at
    # 100 * 1.0002 = 100.02. On flat prices both legs lose their slippage and fee.
    p = bars([100, 100, 100, 100])
    res = run_backtest(*p, signals(4, [(0, -1, 1.0, np.nan, np.nan)], exit_short=[2]), DEFAULTS)
    t = trade(res)
    assert (t["entry_price"], t["exit_price"]) == pytest.approx((99.98, 100.02))
    # bar 1: -1 * (100 / 99.98 - 1) - 0.001; bar 3: -1 * (100.02 / 100 - 1) - 0.001.
    assert res.returns[1] == pytest.approx(-(100 / 99.98 - 1) - FEE)
    assert res.returns[3] == pytest.approx(-0.0002 - FEE)


def test_position_is_held_until_an_exit_and_turnover_follows_the_signals():
    n = 96  # one day of 15m bars with bars_per_year 35040: days = 96 * 365 / 35040 = 1
    p = bars(np.full(n, 100.0))
    held = signals(n, [(0, 1, 1.0, np.nan, np.nan), (5, 1, 1.0, np.nan, np.nan)])
    res = run_backtest(*p, held, DEFAULTS)
    # The second entry at 5 is ignored (no pyramiding); the position runs to the end.
    assert res.trades.height == 1 and trade(res)["exit_reason"] == "end"
    assert res.open_position_at_end and res.position[-1] == 1.0 and (res.position[1:] == 1).all()
    # Marked to the last close with no exit fee: costs are the entry leg only, 0.0012.
    assert res.costs_paid == pytest.approx(FEE + SLIP)
    churn = signals(
        n, [(0, 1, 1.0, np.nan, np.nan), (20, 1, 1.0, np.nan, np.nan)], exit_long=[10, 30]
    )
    m_held, m_churn = (
        backtest_metrics(run_backtest(*p, held, DEFAULTS)),
        backtest_metrics(run_backtest(*p, churn, DEFAULTS)),
    )
    # Traded notional per day: held 1 leg of size 1 = 1.0; churn 2 round trips = 4.0.
    assert m_held["turnover"] == pytest.approx(1.0) and m_churn["turnover"] == pytest.approx(4.0)
    # Exposure: held at closes 1..95 = 95/96; churn at closes 1..10 and 21..30 = 20/96.
    assert m_held["exposure"] == pytest.approx(95 / 96)
    assert m_churn["exposure"] == pytest.approx(20 / 96)


def test_reversal_exits_and_enters_at_the_same_open_with_both_legs_charged():
    # Long at open(1) = 100; at close(2) exit long + enter short: both at open(3) = 102.
    p = bars([100, 101, 102, 102, 100, 100])
    s = signals(6, [(0, 1, 1.0, np.nan, np.nan), (2, -1, 1.0, np.nan, np.nan)], exit_long=[2])
    cfg = BacktestConfig(costs=CostModel(fee_bps=10.0, slippage_bps=0.0))
    res = run_backtest(*p, s, cfg)
    assert res.trades.get_column("side").to_list() == [1, -1]
    assert res.trades.get_column("exit_reason").to_list() == ["signal", "end"]
    assert res.action[2] == Action.ENTRY_SHORT
    np.testing.assert_array_equal(res.position, [0, 1, 1, -1, -1, -1])
    # Bar 3: long exit 1 * (102/102 - 1) - 0.001, short entry -1 * (102/102 - 1) - 0.001.
    assert res.returns[3] == pytest.approx(-0.002)
    # Bar 4: the short earns -(100/102 - 1) = 0.019608.
    assert res.returns[4] == pytest.approx(-(100 / 102 - 1))
    assert res.costs_paid == pytest.approx(3 * FEE)  # long in+out, short in (open at end)


def test_exit_and_same_side_entry_only_exits():
    p = bars(np.full(6, 100.0))
    s = signals(6, [(0, 1, 1.0, np.nan, np.nan), (2, 1, 1.0, np.nan, np.nan)], exit_long=[2])
    res = run_backtest(*p, s, FREE)
    assert res.trades.height == 1 and res.action[2] == Action.EXIT


def test_last_bar_signal_is_recorded_but_not_filled():
    p = bars(np.full(4, 100.0))
    res = run_backtest(*p, signals(4, [(3, 1, 1.0, np.nan, np.nan)]), DEFAULTS)
    assert res.action[3] == Action.ENTRY_LONG and res.trades.height == 0
    assert res.position[3] == 0.0 and res.equity[-1] == 1.0
    res = run_backtest(*p, signals(4, [(0, 1, 1.0, np.nan, np.nan)], exit_long=[3]), DEFAULTS)
    assert res.action[3] == Action.EXIT and trade(res)["exit_reason"] == "end"
    assert res.position[3] == 1.0 and res.open_position_at_end


def test_close_fill_is_the_look_ahead_variant():
    # fill="close": decided and filled at close(0) = 100, exit at close(2) = 104 (no costs).
    p = bars([100, 102, 104, 90], open_=[100, 101, 103, 104])
    s = signals(4, [(0, 1, 1.0, np.nan, np.nan)], exit_long=[2])
    res = run_backtest(*p, s, BacktestConfig(costs=FREE.costs, fill="close"))
    np.testing.assert_allclose(res.returns, [0.0, 0.02, 104 / 102 - 1, 0.0])
    assert trade(res)["entry_ts"] == 0 and trade(res)["net_return"] == pytest.approx(0.04)
    np.testing.assert_array_equal(res.position, [1, 1, 0, 0])
    # The same signals filled at the next open: in at 101, out at open(3) = 104.
    assert trade(run_backtest(*p, s, FREE))["net_return"] == pytest.approx(104 / 101 - 1)


def test_buy_and_hold_by_hand():
    # In at open(1) * 1.0002 = 100.02 with a 0.001 fee, marked at the last close 110.
    p = bars([100, 100, 105, 110])
    res = run_backtest(*p, buy_and_hold_signals(4), DEFAULTS)
    expected = (1 + 100 / 100.02 - 1 - FEE) * (105 / 100) * (110 / 105)
    assert res.equity[-1] == pytest.approx(expected)
    assert trade(res)["exit_reason"] == "end"


def test_look_ahead_fill_is_profitable_where_the_real_fill_is_not():
    # open(t+1) = close(t) * (1 + g_t) and the signal at t is sign(g_t): only a backtest that
    # fills at close(t) can earn the gap it has not seen yet.
    rng = np.random.default_rng(11)
    n = 4000
    g = rng.normal(0.0, 0.002, n)
    close = np.empty(n)
    open_ = np.empty(n)
    open_[0] = close_prev = 100.0
    for t in range(n):
        if t:
            open_[t] = close_prev * (1 + g[t - 1])
        close[t] = open_[t] * np.exp(rng.normal(0.0, 0.002))
        close_prev = close[t]
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.001, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.001, n)))
    s = flat_signals(n)
    s.entry_side[:] = np.sign(g).astype(np.int8)
    s.size[:] = 1.0
    s.exit_long[:] = s.exit_short[:] = True
    p = (np.arange(n, dtype=np.int64) * TF, open_, high, low, close)
    cheat = backtest_metrics(run_backtest(*p, s, BacktestConfig(costs=FREE.costs, fill="close")))
    real = backtest_metrics(run_backtest(*p, s, FREE))
    assert cheat["psr"] > 0.999 and cheat["total_return"] > 1.0
    assert real["psr"] < 0.95
    assert abs(real["total_return"]) < 0.5 * cheat["total_return"]


def _random_case(seed, n, density):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.003, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    s = flat_signals(n)
    on = rng.random(n) < density
    s.entry_side[on] = rng.choice(np.array([-1, 1], dtype=np.int8), on.sum())
    s.size[on] = rng.choice([0.0, 0.5, 1.0, 1.5], on.sum())
    s.stop_pct[:] = np.where(rng.random(n) < 0.5, rng.uniform(0.002, 0.03, n), np.nan)
    s.take_profit_pct[:] = np.where(rng.random(n) < 0.5, rng.uniform(0.002, 0.03, n), np.nan)
    s.exit_long[:] = rng.random(n) < density
    s.exit_short[:] = rng.random(n) < density
    return (np.arange(n, dtype=np.int64) * TF, open_, high, low, close), s


def reference(o, h, lo, c, s, fee, slip):
    """A plain bar-by-bar state machine of the same rules, the engine's oracle."""
    n = c.size
    r, pos, act = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int8)
    side, size, stop, tp, exit_next, enter_next, n_trades = 0, 0.0, 0.0, 0.0, False, None, 0
    for j in range(n):
        ret, ref = 0.0, c[j - 1] if j else math.nan
        if exit_next:
            ret += side * size * (o[j] * (1 - side * slip) / ref - 1) - fee * size
            side = 0
        if enter_next:
            side, size, sp, tpp = enter_next
            ref = o[j] * (1 + side * slip)
            stop, tp = ref * (1 - side * sp), ref * (1 + side * tpp)
            ret -= fee * size
            n_trades += 1
        exit_next, enter_next = False, None
        if side:
            hit_stop = lo[j] <= stop if side > 0 else h[j] >= stop
            hit_tp = h[j] >= tp if side > 0 else lo[j] <= tp
            if hit_stop or hit_tp:
                level = stop if hit_stop else tp
                worse = (min if side > 0 else max) if hit_stop else (max if side > 0 else min)
                px = worse(o[j], level) * (1 - side * slip)
                ret += side * size * (px / ref - 1) - fee * size
                side = 0
            else:
                ret += side * size * (c[j] / ref - 1)
        valid = s.entry_side[j] != 0 and s.size[j] > 0
        new = (int(s.entry_side[j]), s.size[j], s.stop_pct[j], s.take_profit_pct[j])
        if side and (s.exit_long[j] if side > 0 else s.exit_short[j]):
            exit_next, act[j] = True, Action.EXIT
            if valid and s.entry_side[j] == -side:
                enter_next = new
        elif not side and valid:
            enter_next = new
        if enter_next:
            act[j] = Action.ENTRY_LONG if enter_next[0] > 0 else Action.ENTRY_SHORT
        r[j], pos[j] = ret, side * size
    return r, pos, act, n_trades


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 80),
    density=st.sampled_from([0.05, 0.3, 0.9]),
)
def test_engine_matches_a_bar_by_bar_reference(seed, n, density):
    p, s = _random_case(seed, n, density)
    res = run_backtest(*p, s, DEFAULTS)
    r, pos, act, n_trades = reference(*p[1:], s, FEE, SLIP)
    np.testing.assert_allclose(res.returns, r, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.position, pos)
    np.testing.assert_array_equal(res.action, act)
    assert res.trades.height == n_trades
    held = res.trades.get_column("bars_held").sum()
    assert held == np.count_nonzero(pos)  # bars_held counts the closes with a position


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 200))
def test_costs_only_ever_lower_returns(seed, n):
    p, s = _random_case(seed, n, 0.3)
    # Fees do not move stop levels, so the trades are the same at every fee level.
    runs = [
        run_backtest(*p, s, BacktestConfig(costs=CostModel(fee_bps=10.0 * k, slippage_bps=0.0)))
        for k in (0, 1, 2)
    ]
    for cheap, dear in zip(runs, runs[1:], strict=False):
        assert (dear.equity <= cheap.equity + 1e-12).all()
    assert runs[0].costs_paid == 0.0
    assert runs[2].costs_paid == pytest.approx(2 * runs[1].costs_paid)
    # Without stops, slippage cannot change the trades either: scale both costs.
    s.stop_pct[:] = s.take_profit_pct[:] = np.nan
    base = COSTS
    runs = [run_backtest(*p, s, BacktestConfig(costs=base.scaled(k))) for k in (0, 1, 2)]
    totals = [r.equity[-1] for r in runs]
    assert totals[0] >= totals[1] >= totals[2]
    assert runs[2].costs_paid == pytest.approx(2 * runs[1].costs_paid)


def test_random_signals_match_the_requested_trades():
    p = bars(np.full(3000, 100.0))
    s = random_signals(3000, 50, 12.0, 0.5, allow_short=True, seed=4)
    res = run_backtest(*p, s, DEFAULTS)
    assert res.trades.height == 50
    assert set(res.trades.get_column("exit_reason").to_list()) == {"signal"}
    assert (res.trades.get_column("size") == 0.5).all()
    assert np.isnan(s.stop_pct).all()
    same = random_signals(3000, 50, 12.0, 0.5, allow_short=True, seed=4)
    np.testing.assert_array_equal(same.entry_side, s.entry_side)


def test_compare_reports_the_policy_and_its_baselines():
    p, s = _random_case(8, 600, 0.05)
    runs = compare(*p, s, DEFAULTS, seed=1)
    names = {"policy", "buy_and_hold", "flat", "random", "policy_2x_costs", "policy_gross"}
    assert set(runs) == names
    out = {name: run.metrics for name, run in runs.items()}
    keys = {
        "sharpe",
        "sharpe_daily",
        "psr",
        "max_drawdown",
        "win_rate",
        "payoff_ratio",
        "turnover",
        "exposure",
        "n_trades",
        "costs_paid",
        "total_return",
        "annual_return",
        "n_bars",
    }
    assert all(set(m) == keys for m in out.values())
    assert out["flat"]["total_return"] == 0.0 and out["flat"]["n_trades"] == 0
    assert out["random"]["n_trades"] == out["policy"]["n_trades"] > 0
    assert out["buy_and_hold"]["n_trades"] == 1
    assert out["policy_2x_costs"]["costs_paid"] > out["policy"]["costs_paid"]
    # Gross of costs: the same trades, nothing paid, never a lower final equity.
    assert out["policy_gross"]["costs_paid"] == 0.0
    assert out["policy_gross"]["n_trades"] == out["policy"]["n_trades"]
    assert runs["policy_gross"].result.equity[-1] >= runs["policy"].result.equity[-1]
    # Each run's result is the one its metrics describe.
    for run in runs.values():
        assert run.metrics["total_return"] == pytest.approx(run.result.equity[-1] - 1.0)


def test_metrics_by_hand():
    # One long of size 1, no costs: +10% at bar 1, -20% at bar 2, exit at open(3).
    p = bars([100, 110, 88, 88])
    res = run_backtest(*p, signals(4, [(0, 1, 1.0, np.nan, np.nan)], exit_long=[2]), FREE)
    m = backtest_metrics(res, BacktestConfig(costs=COSTS, bars_per_year=4))
    # equity 1, 1.1, 0.88, 0.88: drawdown 1 - 0.88 / 1.1 = 0.2; total 0.88 - 1 = -0.12.
    assert m["max_drawdown"] == pytest.approx(0.2) and m["total_return"] == pytest.approx(-0.12)
    # 4 bars = one year at bars_per_year 4: annual return = total return.
    assert m["annual_return"] == pytest.approx(-0.12)
    assert (m["n_trades"], m["win_rate"], m["n_bars"]) == (1, 0.0, 4)
    assert math.isnan(m["payoff_ratio"])
    # Turnover: 2 legs of size 1 over 4 * 365 / 4 = 365 days.
    assert m["turnover"] == pytest.approx(2 / 365)
    # Doubling in 3 bars of 15m compounds past float range over a year: inf, not an error.
    doubled = run_backtest(*bars([100, 100, 200]), buy_and_hold_signals(3), FREE)
    assert backtest_metrics(doubled)["annual_return"] == math.inf


def test_worst_case_trades_every_bar_quickly():
    n = 100_000
    p, _ = _random_case(0, n, 0.0)
    s = flat_signals(n)
    s.entry_side[:] = np.where(np.arange(n) % 2 == 0, 1, -1)
    s.size[:] = 1.0
    s.stop_pct[:], s.take_profit_pct[:] = 0.01, 0.02
    s.exit_long[:] = s.exit_short[:] = True
    t0 = time.perf_counter()
    res = run_backtest(*p, s, DEFAULTS)
    backtest_metrics(res)
    assert time.perf_counter() - t0 < 5.0
    assert res.trades.height >= n // 2


def _bad_signals(**change):
    s = signals(4, [(0, 1, 1.0, np.nan, np.nan)])
    fields = {k: getattr(s, k) for k in s.__dataclass_fields__}
    return Signals(**{**fields, **change})


P4 = bars([100.0, 101.0, 102.0, 103.0])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((P4[0][:3], *P4[1:]), r"open has shape \(4,\), expected \(3,\)"),
        ((P4[0][::-1].copy(), *P4[1:]), "timestamps must be strictly increasing, got 1800000"),
        ((P4[0].astype(float), *P4[1:]), "timestamps must be a non-empty 1-D integer array"),
        ((P4[0], P4[1], P4[2], P4[2] + 5, P4[4]), "low must be <= min"),
        ((P4[0], P4[1], P4[3] - 1, P4[3], P4[4]), "high must be >= max"),
        ((P4[0], np.r_[100.0, np.nan, 101, 102], *P4[2:]), "open must be finite and > 0, got nan"),
    ],
)
def test_bad_prices_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        run_backtest(*args, flat_signals(4), DEFAULTS)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"size": np.array([-1.0, 0, 0, 0])}, "signals.size must be >= 0, got -1.0 at index 0"),
        ({"size": np.array([np.nan, 0, 0, 0])}, "signals.size must be finite at entries"),
        ({"entry_side": np.array([2, 0, 0, 0], np.int8)}, "entry_side must be in .* got 2"),
        ({"entry_side": np.zeros(4)}, "signals.entry_side must be a signed integer array of shape"),
        (
            {"exit_long": np.zeros(3, bool)},
            r"signals.exit_long must be a bool array of shape \(4,\), got bool \(3,\)",
        ),
        ({"stop_pct": np.array([0.0, 1, 1, 1])}, "stop_pct must be > 0 or NaN"),
    ],
)
def test_bad_signals_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        run_backtest(*P4, _bad_signals(**change), DEFAULTS)


def test_costs_take_the_configured_values_from_their_caller():
    # No defaults to drift from LEVIBOT_FEE_BPS / LEVIBOT_SLIPPAGE_BPS.
    with pytest.raises(TypeError, match="fee_bps.*slippage_bps"):
        CostModel()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="costs"):
        BacktestConfig()  # type: ignore[call-arg]


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="fill must be one of"):
        BacktestConfig(costs=COSTS, fill="open")
    with pytest.raises(ValueError, match="fee_bps must be a finite number >= 0, got -1"):
        CostModel(fee_bps=-1.0, slippage_bps=2.0)
    with pytest.raises(ValueError, match="cost scale k must be"):
        COSTS.scaled(-2.0)
    with pytest.raises(ValueError, match="size must be a finite number > 0"):
        random_signals(100, 3, 5.0, 0.0, seed=0)
    assert CostModel(10.0, 2.0).scaled(2.0) == CostModel(20.0, 4.0)
