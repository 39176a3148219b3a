"""The decision rule: expected-return map, policy JSON, signals, causality, latest decision."""

import json
import math

import numpy as np
import pytest

from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel, run_backtest
from levibot_pipelines.core.trading.decision import (
    NO_EDGE,
    DecisionPolicy,
    ExpectedReturnMap,
    decide_latest,
    decision_signals,
    flat_policy,
    round_trip_cost_bps,
)

# mu_hat: -30 bps at s <= 0.2, +40 bps at s >= 0.8, linear in between: -30 + 70 (s - 0.2) / 0.6.
MAP = ExpectedReturnMap((0.2, 0.8), (-30e-4, 40e-4), 1000)
LONG = DecisionPolicy("lgbm", 3, 5.0, 24.0, 12.0)


def test_round_trip_cost_counts_fees_and_slippage_on_both_legs():
    assert round_trip_cost_bps(CostModel(10.0, 2.0)) == 24.0


def test_map_is_isotonic_clipped_and_needs_samples():
    s = np.repeat([0.1, 0.3, 0.5, 0.7, 0.9], 40)
    r = np.repeat([-0.002, 0.001, 0.0, 0.003, 0.004], 40)  # 0.3 > 0.5 violates the order
    m = ExpectedReturnMap.fit(s, r, min_samples=200, bin_size=40)
    # Pooled 0.3 and 0.5 bins: (0.001 + 0.0) / 2 = 0.0005.
    np.testing.assert_allclose(m([0.1, 0.3, 0.5, 0.7, 0.9]), [-0.002, 5e-4, 5e-4, 0.003, 0.004])
    assert m([-5.0])[0] == pytest.approx(-0.002) and m([5.0])[0] == pytest.approx(0.004)
    assert np.isnan(m([np.nan]))[0]
    assert m.n_samples == 200
    with pytest.raises(ValueError, match="at least 201 samples .* got 200"):
        ExpectedReturnMap.fit(s, r, min_samples=201)
    r_nan = r.copy()
    r_nan[:5] = np.nan  # unknown returns (the last h + 1 bars) are dropped
    assert ExpectedReturnMap.fit(s, r_nan, min_samples=10).n_samples == 195


def test_map_bins_keep_a_lone_lucky_bar_from_making_an_edge():
    s = np.linspace(0, 1, 400)
    r = np.zeros(400)
    r[-1] = 0.05  # one bar of +500 bps at the top score
    assert ExpectedReturnMap.fit(s, r, bin_size=50)([1.0])[0] == pytest.approx(0.05 / 50)


def test_map_and_policy_round_trip_through_json():
    m = ExpectedReturnMap.fit(np.linspace(0, 1, 300), np.linspace(-0.01, 0.01, 300))
    back = ExpectedReturnMap.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back == m
    for p in (LONG, flat_policy(24.0)):
        assert DecisionPolicy.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ValueError, match="lack"):
        ExpectedReturnMap.from_dict({"x": [0.0]})
    with pytest.raises(ValueError, match="must include"):
        DecisionPolicy.from_dict({"model": "lgbm", "bogus": 1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon": 0}, "horizon must be an integer >= 1"),
        ({"margin_bps": -1.0}, "margin_bps"),
        ({"exit_bps": 30.0}, "exit_bps"),  # above cost + margin: would exit at once
    ],
)
def test_bad_policy_is_named(kwargs, match):
    base = LONG.to_dict() | kwargs
    with pytest.raises(ValueError, match=match):
        DecisionPolicy(**base)


def _s(values):
    return np.array(values, dtype=np.float64)


def test_entry_hold_at_least_h_then_hysteresis_exit():
    # mu_hat(0.8) = 40 bps: net 16 > margin 5 -> entry at t=1. Exit level 12 bps gross:
    # mu_hat(0.7) = 28.3 stays, mu_hat(0.5) = 5 leaves. Held >= 3 bars: bars 2 and 3 are
    # low but inside the hold; bar 4 (0.7) stays; bar 5 (0.5) exits.
    s = _s([0.5, 0.8, 0.5, 0.5, 0.7, 0.5, 0.5, 0.8, 0.5])
    sig = decision_signals(LONG, MAP, s, size=0.1)
    np.testing.assert_array_equal(sig.entry_side, [0, 1, 0, 0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(np.flatnonzero(sig.exit_long), [5])
    assert not sig.exit_short.any()
    np.testing.assert_array_equal(sig.size, np.where(sig.entry_side != 0, 0.1, 0.0))
    assert np.isnan(sig.stop_pct).all() and np.isnan(sig.take_profit_pct).all()


def test_margin_and_costs_gate_entries():
    # mu_hat(0.7) = 28.3 bps: net 4.3 < margin 5 -> no entry; margin 0 -> entry.
    s = _s([0.7, 0.5])
    assert not decision_signals(LONG, MAP, s).entry_side.any()
    zero = DecisionPolicy("lgbm", 3, 0.0, 24.0, 12.0)
    assert decision_signals(zero, MAP, s).entry_side[0] == 1


def test_uncertainty_reads_the_map_at_a_pessimistic_score():
    # s=0.8 with u=0.1 and k=1: mu_hat(0.7) = 28.3 -> net 4.3 < 5: no entry.
    p = DecisionPolicy("deep", 3, 5.0, 24.0, 12.0, uncertainty_penalty=1.0)
    assert decision_signals(p, MAP, _s([0.8, 0.5]), uncertainty=_s([0.0, 0])).entry_side[0] == 1
    assert decision_signals(p, MAP, _s([0.8, 0.5]), uncertainty=_s([0.1, 0])).entry_side[0] == 0
    with pytest.raises(ValueError, match="uncertainty"):
        decision_signals(p, MAP, _s([0.8, 0.5]), uncertainty=_s([-1.0, 0]))


def test_short_is_symmetric_and_only_when_allowed():
    # mu_hat(0.2) = -30 bps: a short expects +30, net 6 > 5.
    s = _s([0.2, 0.5, 0.5, 0.5, 0.5])
    assert not decision_signals(LONG, MAP, s).entry_side.any()
    short = DecisionPolicy("lgbm", 3, 5.0, 24.0, 12.0, allow_short=True)
    sig = decision_signals(short, MAP, s)
    np.testing.assert_array_equal(sig.entry_side, [-1, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.flatnonzero(sig.exit_short), [3])


def test_nan_score_never_enters_and_exits_after_the_hold():
    s = _s([0.8, 0.8, 0.8, np.nan, 0.8])
    sig = decision_signals(LONG, MAP, s)
    np.testing.assert_array_equal(sig.entry_side, [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(np.flatnonzero(sig.exit_long), [3])


def test_signals_are_causal():
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, 300)
    s[rng.random(300) < 0.05] = np.nan
    full = decision_signals(LONG, MAP, s)
    for cut in (1, 17, 150, 299):
        part = decision_signals(LONG, MAP, s[:cut])
        for name in ("entry_side", "exit_long", "exit_short", "size"):
            np.testing.assert_array_equal(getattr(part, name), getattr(full, name)[:cut])


def test_backtest_holds_each_trade_exactly_h_bars_when_the_score_fades():
    s = np.full(40, 0.5)
    s[[2, 20]] = 0.8
    o = 100 * np.exp(np.linspace(0, 0.02, 40))
    ts = np.arange(40, dtype=np.int64) * 900_000
    sig = decision_signals(LONG, MAP, s)
    res = run_backtest(ts, o, o * 1.001, o * 0.999, o, sig, BacktestConfig(CostModel(10, 2)))
    assert res.trades["bars_held"].to_list() == [3, 3]
    # Entry at open(3), exit at open(6) (decided at 5), slippage 2 bps each way.
    assert res.trades["entry_price"][0] == pytest.approx(o[3] * 1.0002)
    assert res.trades["exit_price"][0] == pytest.approx(o[6] * 0.9998)


def test_flat_policy_never_trades_and_says_why():
    f = flat_policy(24.0)
    sig = decision_signals(f, None, _s([0.9, 0.9, 0.1]))
    assert not sig.entry_side.any() and not sig.exit_long.any()
    d = decide_latest(f, None, 0.9)
    assert (d.signal, d.horizon, d.expected_net_bps, d.reason) == ("HOLD", None, None, NO_EDGE)
    with pytest.raises(ValueError, match="needs an expected-return map"):
        decision_signals(LONG, None, _s([0.5]))


def test_latest_decision_reasons():
    d = decide_latest(LONG, MAP, 0.8)
    assert (d.signal, d.horizon) == ("LONG", 3)
    assert d.expected_net_bps == pytest.approx(16.0)
    assert d.reason == "entry: expected net +16.0 bps over 3 bars"
    d = decide_latest(LONG, MAP, 0.5)
    # mu_hat(0.5) = -30 + 70 * 0.3 / 0.6 = +5 bps: net 5 - 24 = -19.
    assert d.signal == "HOLD" and d.expected_net_bps == pytest.approx(-19.0)
    assert d.reason == "expected gain below costs: net -19.0 bps over 3 bars (margin 5 bps)"
    short = DecisionPolicy("lgbm", 3, 5.0, 24.0, 12.0, allow_short=True)
    assert decide_latest(short, MAP, 0.2).reason == "entry short: expected net +6.0 bps over 3 bars"
    assert decide_latest(LONG, MAP, math.nan).reason == "no score for the latest bar"
