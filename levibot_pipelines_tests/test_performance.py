"""Performance statistics: hand-computed values, bounds and errors."""

import math

import numpy as np
import pytest

from levibot_pipelines.core.trading.performance import (
    MS_PER_DAY,
    current_drawdown,
    daily_returns,
    drawdown,
    max_drawdown,
    payoff_ratio,
    probabilistic_sharpe_ratio,
    random_trade_bars,
    sharpe,
    win_rate,
)

KNOWN = np.array([0.01, -0.01, 0.02, 0.0])


def test_sharpe_of_a_known_series():
    # mean 0.005; deviations .005 -.015 .015 -.005, squares sum 5e-4, / 3 -> var 1.6667e-4,
    # std 0.0129099; per period 0.005 / 0.0129099 = 0.387298; x sqrt(4) = 0.774597.
    assert sharpe(KNOWN, 4) == pytest.approx(0.774597, abs=1e-6)
    assert sharpe(KNOWN, 1) == pytest.approx(0.387298, abs=1e-6)


def test_sharpe_is_zero_without_dispersion():
    assert sharpe(np.full(10, 0.01), 35040) == 0.0
    assert sharpe(np.array([0.01]), 35040) == 0.0


def test_drawdown_from_the_running_peak():
    assert drawdown(np.array([1.0, 1.2, 0.9, 1.0])) == pytest.approx([0.0, 0.0, 0.25, 1 / 6])
    assert current_drawdown([1.0, 1.2, 0.9, 1.0]) == pytest.approx(1 / 6)
    assert current_drawdown([1.0, 0.0]) == 1.0  # wiped out
    with pytest.raises(ValueError, match="equity must start > 0"):
        drawdown([0.0, 1.0])


def test_max_drawdown_of_a_known_curve():
    # peak 1.2, trough 0.9: 1 - 0.9 / 1.2 = 0.25; the recovery to 1.0 does not matter.
    assert max_drawdown(np.array([1.0, 1.2, 0.9, 1.0])) == pytest.approx(0.25)
    assert max_drawdown(np.array([1.0, 1.1, 1.3])) == 0.0


def test_psr_of_a_known_series():
    # SR = 0.387298 (above). m2 = 5e-4 / 4 = 1.25e-4; m3 = 0 (symmetric deviations) -> skew 0;
    # m4 = (2 * .005^4 + 2 * .015^4) / 4 = 2.5625e-8 -> kurt = 2.5625e-8 / 1.5625e-8 = 1.64.
    # var = 1 - 0 + (1.64 - 1) / 4 * 0.15 = 1.024; z = 0.387298 * sqrt(3) / sqrt(1.024)
    # = 0.662913; Phi(0.662913) = 0.746299.
    assert probabilistic_sharpe_ratio(KNOWN) == pytest.approx(0.746299, abs=1e-5)


def test_psr_strongly_positive_near_one_zero_mean_near_half():
    rng = np.random.default_rng(3)
    assert probabilistic_sharpe_ratio(rng.normal(0.001, 0.01, 5000)) > 0.99
    zero_mean = rng.normal(0.0, 0.01, 5000)
    zero_mean -= zero_mean.mean()
    assert probabilistic_sharpe_ratio(zero_mean) == pytest.approx(0.5, abs=1e-6)
    # A higher benchmark Sharpe can only lower the probability of beating it.
    r = rng.normal(0.0005, 0.01, 2000)
    psrs = [probabilistic_sharpe_ratio(r, b) for b in (-0.05, 0.0, 0.05, 0.1)]
    assert psrs == sorted(psrs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in psrs)


def test_psr_degenerate_series():
    assert probabilistic_sharpe_ratio(np.array([0.01])) == 0.5
    assert probabilistic_sharpe_ratio(np.zeros(5)) == 0.5
    assert probabilistic_sharpe_ratio(np.full(5, 0.01)) == 1.0


def test_daily_returns_compound_per_utc_day():
    # Day 0: bars at 00:00 and 23:45 with +10% each -> 1.1 * 1.1 - 1 = 0.21.
    # Day 1: the bar opening exactly at midnight belongs to day 1: -50%. Day 2 is empty.
    # Day 3: +1%.
    ts = np.array([0, MS_PER_DAY - 900_000, MS_PER_DAY, 3 * MS_PER_DAY + 5], dtype=np.int64)
    days, r = daily_returns(ts, np.array([0.1, 0.1, -0.5, 0.01]))
    np.testing.assert_array_equal(days, [0, MS_PER_DAY, 3 * MS_PER_DAY])
    np.testing.assert_allclose(r, [0.21, -0.5, 0.01])


def test_win_rate_and_payoff_ratio():
    # wins .02 .04 (avg .03), losses -.01 -.03 (avg -.02): win rate 2/4, payoff .03 / .02.
    r = np.array([0.02, -0.01, 0.04, -0.03])
    assert win_rate(r) == 0.5
    assert payoff_ratio(r) == pytest.approx(1.5)
    assert math.isnan(win_rate(np.array([])))
    assert math.isnan(payoff_ratio(np.array([0.01, 0.02])))


def test_random_trade_bars_are_disjoint_and_fill():
    n, m = 2000, 100
    start, hold, side = random_trade_bars(n, m, 8.0, allow_short=True, seed=5)
    assert start.size == hold.size == side.size == m
    assert (hold >= 1).all() and set(np.unique(side)) <= {-1, 1}
    # Each trade occupies decision bars [start, start + hold]; the next starts after that.
    assert (start[1:] > start[:-1] + hold[:-1]).all()
    assert start[0] >= 0 and start[-1] + hold[-1] <= n - 2
    again = random_trade_bars(n, m, 8.0, allow_short=True, seed=5)
    np.testing.assert_array_equal(again[0], start)


def test_random_trade_bars_mean_holding_and_trimming():
    _, hold, side = random_trade_bars(200_000, 5000, 10.0, seed=1)
    assert hold.mean() == pytest.approx(10.0, rel=0.05)
    assert (side == 1).all()
    # 40 trades of mean 50 bars cannot fit in 100 bars: holds are trimmed to fit exactly.
    start, hold, _ = random_trade_bars(101, 40, 50.0, seed=2)
    assert (hold + 1).sum() <= 100 and (start[1:] > start[:-1] + hold[:-1]).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sharpe(np.array([0.1, np.nan]), 4), "returns must be finite, got nan at index 1"),
        (lambda: sharpe(KNOWN, 0), "periods_per_year must be > 0, got 0"),
        (lambda: max_drawdown(np.array([1.0, -0.1])), r"equity must be > 0, got -0.1"),
        (lambda: max_drawdown(np.array([])), "equity must not be empty"),
        (
            lambda: daily_returns(np.array([0.0, 1.0]), np.array([0.0, 0.0])),
            "timestamps must be a 1-D integer array",
        ),
        (
            lambda: daily_returns(np.array([0, 1], dtype=np.int64), np.zeros(3)),
            "timestamps has 2 rows but returns has 3",
        ),
        (lambda: random_trade_bars(10, 5, 2.0, seed=0), r"n_trades must be in \[0, .* = 4\]"),
        (lambda: random_trade_bars(10, 2, 0.0, seed=0), "mean_bars_held must be"),
    ],
)
def test_errors_name_the_bad_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
