"""The backtest baselines added to ``compare``'s: the reversal rule as a policy and the random
policy as a distribution over seeds."""

import numpy as np
import pytest

from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel, run_backtest
from levibot_pipelines.core.trading.baselines import (
    N_RANDOM_SEEDS,
    random_distribution,
    random_signals,
    random_spec,
    random_trade_returns,
    reversal_signals,
)

TF = 900_000  # 15m bars, in ms
FEE, SLIP = 10e-4, 5e-4  # 10 bps fee and 5 bps slippage per leg
COSTS = BacktestConfig(costs=CostModel(fee_bps=10.0, slippage_bps=5.0))


def _prices(open_, close):
    o, c = np.asarray(open_, dtype=float), np.asarray(close, dtype=float)
    ts = np.arange(c.size, dtype=np.int64) * TF
    return ts, o, np.maximum(o, c) + 1.0, np.minimum(o, c) - 1.0, c


# Six bars. Close moves: t1 down (99 < 100), t2 up, t3 down, t4 up, t5 down.
OPEN = [100.0, 100.0, 98.0, 103.0, 100.0, 104.0]
CLOSE = [100.0, 99.0, 102.0, 101.0, 103.0, 102.0]


def test_reversal_rule_long_only_by_hand():
    p = _prices(OPEN, CLOSE)
    res = run_backtest(*p, reversal_signals(p[4]), COSTS)
    # Trade A: down bar 1 -> long, fills at open(2) = 98 * (1 + 5bp) = 98.049; up bar 2 -> exit,
    # fills at open(3) = 103 * (1 - 5bp) = 102.9485. Bar 2: 102 / 98.049 - 1 - 10bp; bar 3:
    # 102.9485 / 102 - 1 - 10bp (the exit leg is measured from the previous close).
    # Trade B: down bar 3 -> long at open(4) = 100 * 1.0005 = 100.05; up bar 4 -> exit at
    # open(5) = 104 * 0.9995 = 103.948. Bar 4: 103 / 100.05 - 1 - 10bp; bar 5: 103.948 / 103 - 1
    # - 10bp. The long decided at the close of bar 5 (down) cannot fill: the data ends.
    want = [0.0, 0.0, 102 / 98.049 - 1 - FEE, 102.9485 / 102 - 1 - FEE]
    want += [103 / 100.05 - 1 - FEE, 103.948 / 103 - 1 - FEE]
    np.testing.assert_allclose(res.returns, want, rtol=0, atol=1e-12)
    assert res.trades.height == 2
    assert res.trades.get_column("entry_price").to_list() == pytest.approx([98.049, 100.05])
    assert res.trades.get_column("exit_price").to_list() == pytest.approx([102.9485, 103.948])
    # Two round trips, each paying 2 * (10 + 5) bp of a size-1 position.
    assert res.costs_paid == pytest.approx(4 * (FEE + SLIP))
    assert res.equity[-1] == pytest.approx(np.prod(1 + np.array(want)))


def test_reversal_rule_with_shorts_reverses_at_one_open():
    p = _prices(OPEN, CLOSE)
    res = run_backtest(*p, reversal_signals(p[4], allow_short=True), COSTS)
    # Long 98.049 -> reversed at open(3) (103: long out at 102.9485, short in at 102.9485) ->
    # reversed at open(4) (100: short out at 100.05, long in at 100.05) -> reversed at open(5)
    # (104: long out at 103.948, short in at 103.948), that short marked to the last close 102.
    want = [
        0.0,
        0.0,
        102 / 98.049 - 1 - FEE,
        (102.9485 / 102 - 1 - FEE) + (-(101 / 102.9485 - 1) - FEE),
        (-(100.05 / 101 - 1) - FEE) + (103 / 100.05 - 1 - FEE),
        (103.948 / 103 - 1 - FEE) + (-(102 / 103.948 - 1) - FEE),
    ]
    np.testing.assert_allclose(res.returns, want, rtol=0, atol=1e-12)
    assert res.trades.get_column("side").to_list() == [1, -1, 1, -1]


def test_reversal_rule_keeps_a_position_it_would_reopen():
    # Two down bars in a row: the long decided at bar 1 is kept at bar 2 (no round trip),
    # exited after the up bar 3; an unchanged close (bar 4) is flat.
    s = reversal_signals(np.array([100.0, 99.0, 98.0, 99.0, 99.0]))
    assert s.entry_side.tolist() == [0, 1, 1, 0, 0]
    assert s.exit_long.tolist() == [True, False, False, True, True]
    res = run_backtest(*_prices([100, 100, 99, 98, 99], [100, 99, 98, 99, 99]), s, COSTS)
    assert res.trades.height == 1 and res.trades.get_column("bars_held").to_list() == [2]


def _walk(n, seed=0):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    return _prices(np.r_[c[0], c[:-1]] * np.exp(rng.normal(0, 5e-4, n)), c)


@pytest.mark.parametrize("allow_short", [False, True])
def test_direct_random_returns_equal_the_event_loop_backtest(allow_short):
    p = _walk(700, seed=1)
    spec = (40, 5.0, 0.3, {"allow_short": allow_short})
    direct = random_trade_returns(p[1], p[4], spec, COSTS, seed=9)
    full = run_backtest(
        *p, random_signals(700, 40, 5.0, 0.3, allow_short=allow_short, seed=9), COSTS
    )
    np.testing.assert_allclose(direct, full.returns, rtol=0, atol=1e-15)


def test_random_distribution_on_a_flat_market_is_the_costs_alone():
    # Constant price 100: wherever the random trades fall, each of the 3 trades of size 0.5
    # pays 0.5 * (10 + 5) bp per leg: the entry bar returns 0.5 * (100 / 100.05 - 1) - 5bp, the
    # exit bar 0.5 * (99.95 / 100 - 1) - 5bp. Every seed has the same total, so every quantile
    # is that total and no seed is below the flat policy's (0).
    p = _prices(np.full(50, 100.0), np.full(50, 100.0))
    policy = run_backtest(*p, random_signals(50, 3, 4.0, 0.5, seed=0), COSTS)
    d = random_distribution(p[0], p[1], p[4], policy, COSTS, seed=3, n_seeds=7)
    leg_in, leg_out = 0.5 * (100 / 100.05 - 1) - 5e-4, 0.5 * (99.95 / 100 - 1) - 5e-4
    total = ((1 + leg_in) * (1 + leg_out)) ** 3 - 1
    assert d["n_seeds"] == 7
    assert d["total_return"] == pytest.approx({"q05": total, "q50": total, "q95": total})
    assert d["n_trades"] == {"q05": 3.0, "q50": 3.0, "q95": 3.0}
    assert d["policy_percentile"] == 0.0  # the policy paid the same costs: not above any seed


def test_random_distribution_quantiles_interpolate_over_the_seeds():
    p = _walk(400, seed=2)
    policy = run_backtest(*p, random_signals(400, 10, 6.0, 1.0, seed=0), COSTS)
    d = random_distribution(p[0], p[1], p[4], policy, COSTS, seed=5, n_seeds=21)
    # 21 seeds: the 5% quantile sits at sorted position 0.05 * 20 = 1, the median at 10 and
    # the 95% at 19, exactly (linear interpolation lands on order statistics).
    seeds = np.random.SeedSequence(5).generate_state(21)
    spec = random_spec(policy)  # 10 trades, the policy's mean holding and size 1
    runs = [random_trade_returns(p[1], p[4], spec, COSTS, seed=int(s)) for s in seeds]
    totals = np.sort([np.prod(1 + r) - 1 for r in runs])
    assert d["total_return"] == pytest.approx(
        {"q05": totals[1], "q50": totals[10], "q95": totals[19]}
    )
    assert d["total_return"]["q05"] < d["total_return"]["q50"] < d["total_return"]["q95"]
    assert d["sharpe_daily"]["q05"] <= d["sharpe_daily"]["q50"] <= d["sharpe_daily"]["q95"]
    assert d["policy_percentile"] == pytest.approx(np.mean(totals < policy.equity[-1] - 1))


def test_random_distribution_is_deterministic_in_its_seed():
    p = _walk(500, seed=3)
    policy = run_backtest(*p, random_signals(500, 12, 5.0, 0.5, allow_short=True, seed=1), COSTS)
    a = random_distribution(p[0], p[1], p[4], policy, COSTS, seed=4)
    assert a == random_distribution(p[0], p[1], p[4], policy, COSTS, seed=4)
    assert a != random_distribution(p[0], p[1], p[4], policy, COSTS, seed=5)
    assert a["n_seeds"] == N_RANDOM_SEEDS == 200


def test_a_policy_that_catches_both_jumps_beats_every_random_seed():
    # Price 100, jumping +5% inside bar 100 and again inside bar 300 (each open at the previous
    # close), flat otherwise. The policy is long over exactly those two bars (decided at the
    # closes of 99 and 299, exited at the next closes): 2 trades of 1 bar. A random twin (2
    # trades of 1 bar) earns a jump only where it lands on one; catching both would tie.
    n = 400
    close = 100.0 * 1.05 ** ((np.arange(n) >= 100).astype(float) + (np.arange(n) >= 300))
    p = _prices(np.r_[close[0], close[:-1]], close)
    s = random_signals(n, 1, 1.0, 1.0, seed=0)  # a template; its trade is replaced below
    s.entry_side[:], s.size[:], s.exit_long[:], s.exit_short[:] = 0, 0.0, False, False
    s.entry_side[[99, 299]], s.size[[99, 299]] = 1, 1.0
    s.exit_long[[100, 300]] = True
    policy = run_backtest(*p, s, COSTS)
    # Each trade: in at 100.05 (5bp slippage), close 105, out at 105 * 0.9995, 10bp per leg.
    per_trade = (105 / 100.05 - FEE) * (0.9995 - FEE)
    assert policy.trades.height == 2 and policy.equity[-1] == pytest.approx(per_trade**2)
    d = random_distribution(p[0], p[1], p[4], policy, COSTS, seed=0)
    assert d["policy_percentile"] == 1.0
    assert d["total_return"]["q95"] < policy.equity[-1] - 1


def test_bad_inputs_name_the_value():
    p = _walk(50)
    policy = run_backtest(*p, random_signals(50, 2, 3.0, 1.0, seed=0), COSTS)
    with pytest.raises(ValueError, match="n_seeds"):
        random_distribution(p[0], p[1], p[4], policy, COSTS, n_seeds=0)
    look_ahead = BacktestConfig(costs=COSTS.costs, fill="close")
    with pytest.raises(ValueError, match="fill='close'"):
        random_distribution(p[0], p[1], p[4], policy, look_ahead)
