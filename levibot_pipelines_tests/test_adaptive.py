"""Adaptive building blocks: sizing, regimes, thresholds, stop and take-profit levels."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from levibot_pipelines.core.trading.adaptive import (
    REFERENCE_VOLATILITY,
    REGIME_NAMES,
    adaptive_entry_threshold,
    adaptive_stop_loss,
    adaptive_take_profit,
    classify_regime,
    classify_regimes,
    relative_volatility,
    size_from_confidence,
    stop_distance_pct,
)

SEED = 11
# Most tests give volatility RELATIVE to its typical level (1.0 typical) with reference 1.0;
# test_seed_policy_examples.py and the tests below named "absolute" use the seed's units.
REL = {"reference_volatility": 1.0}
unit = st.floats(0.0, 1.0)
vol = st.floats(0.01, 20.0)
unc = st.floats(0.0, 1.0)
base_thr = st.floats(0.501, 0.99)


# ---- size_from_confidence -------------------------------------------------------------------


def test_size_hand_computed():
    assert size_from_confidence(0.6, 2.0, **REL) == pytest.approx(0.3)  # 1 * 0.6 * 1 / 2
    # uncertainty 0.05 halves it: 0.3 / (1 + 0.05 / 0.05)
    assert size_from_confidence(0.6, 2.0, uncertainty=0.05, **REL) == pytest.approx(0.15)
    assert size_from_confidence(0.2, 0.1, **REL) == pytest.approx(0.4)  # vol floored: 0.2 / 0.5
    # base 2, regime multiplier 0.5: 2 * 0.5 * 0.5 / 1
    assert size_from_confidence(0.5, 1.0, 0.5, 2.0, **REL) == pytest.approx(0.5)
    assert size_from_confidence(0.9, 1.0, max_size=0.5, **REL) == 0.5  # 0.9 capped
    assert size_from_confidence(0.29, 1.0, min_confidence=0.3, **REL) == 0.0
    assert size_from_confidence(0.3, 1.0, min_confidence=0.3, **REL) == pytest.approx(0.3)
    out = size_from_confidence(np.array([0.2, 0.4]), np.array([1.0, 2.0]), **REL)
    assert isinstance(out, np.ndarray) and np.allclose(out, [0.2, 0.2])
    assert isinstance(size_from_confidence(0.5, 1.0, **REL), float)


@given(unit, unit, vol, unc, st.floats(0.0, 1.0), st.floats(0.0, 2.0))
def test_size_grows_with_confidence_and_respects_cap_and_entry(c1, c2, v, u, min_conf, cap):
    lo, hi = sorted((c1, c2))
    kw = {"uncertainty": u, "min_confidence": min_conf, "max_size": cap, **REL}
    s_lo, s_hi = size_from_confidence(lo, v, **kw), size_from_confidence(hi, v, **kw)
    assert 0.0 <= s_lo <= s_hi <= cap
    if lo < min_conf:
        assert s_lo == 0.0


@given(unit, vol, vol, unc, unc)
def test_size_shrinks_with_volatility_and_uncertainty(c, v1, v2, u1, u2):
    (va, vb), (ua, ub) = sorted((v1, v2)), sorted((u1, u2))
    assert size_from_confidence(c, va, uncertainty=u1, **REL) >= size_from_confidence(
        c, vb, uncertainty=u1, **REL
    )
    assert size_from_confidence(c, v1, uncertainty=ua, **REL) >= size_from_confidence(
        c, v1, uncertainty=ub, **REL
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"confidence": 1.2}, r"confidence must be finite in \[0.0, 1.0\], got 1.2"),
        ({"confidence": [0.5, -0.1]}, r"confidence .* got -0.1 at index 1"),
        ({"volatility": 0.0}, r"volatility must be finite in \(0.0, inf\], got 0.0"),
        ({"uncertainty": -0.01}, r"uncertainty .* got -0.01"),
        ({"max_size": -1.0}, r"max_size .* got -1.0"),
        ({"base_size": float("nan")}, r"base_size .* got nan"),
        ({"reference_volatility": 0.0}, r"reference_volatility must be finite in \(0.0, inf\]"),
    ],
)
def test_size_rejects_bad_inputs(kwargs, match):
    args = {"confidence": 0.5, "volatility": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        size_from_confidence(**args)


def test_absolute_volatility_is_read_relative_to_the_reference():
    # Default reference 0.02: volatility 0.04 is relative 2, so 0.6 / 2 = 0.3; a reference of
    # 0.004 makes 0.004 typical: 0.6 / 1 = 0.6; 0.001 of 0.004 is 0.25, floored at 0.5: 1.2.
    assert REFERENCE_VOLATILITY == 0.02
    assert size_from_confidence(0.6, 0.04) == pytest.approx(0.3)
    assert size_from_confidence(0.6, 0.004, reference_volatility=0.004) == pytest.approx(0.6)
    assert size_from_confidence(0.6, 0.001, reference_volatility=0.004) == pytest.approx(1.2)
    assert adaptive_entry_threshold(0.55, 0, 0.04) == pytest.approx(0.56)  # rel 2: + 0.01
    assert stop_distance_pct(0.01, 0.03) == pytest.approx(0.015)  # rel 1.5
    assert adaptive_take_profit(100.0, 0.02, 0.02) == pytest.approx(102.0)  # rel 1
    assert classify_regime(np.full(10, 0.001), 0.06) == "neutral"  # rel 3: a shock
    assert classify_regime(np.full(10, 0.001), 0.059) == "trend"
    # A per-bar reference (array) broadcasts: each bar against its own typical level.
    out = size_from_confidence(0.6, np.array([0.002, 0.006]), reference_volatility=[0.002, 0.003])
    np.testing.assert_allclose(out, [0.6, 0.3])


@given(unit, st.floats(1e-4, 0.5), st.floats(1e-4, 0.1), st.sampled_from((1, 0, -1)))
def test_absolute_and_relative_calls_agree(c, v, ref, code):
    # Every helper reads only volatility / reference_volatility.
    rel = v / ref
    assert size_from_confidence(c, v, reference_volatility=ref) == pytest.approx(
        size_from_confidence(c, rel, **REL)
    )
    assert adaptive_entry_threshold(0.55, code, v, reference_volatility=ref) == pytest.approx(
        adaptive_entry_threshold(0.55, code, rel, **REL)
    )
    assert stop_distance_pct(0.01, v, reference_volatility=ref) == pytest.approx(
        stop_distance_pct(0.01, rel, **REL)
    )


# ---- entry threshold ------------------------------------------------------------------------


def test_threshold_hand_computed():
    # base 0.55 at relative volatility 1: trend 0.55 - 0.02, neutral 0.55, meanrev 0.55 + 0.02.
    assert adaptive_entry_threshold(0.55, "trend", 1.0, **REL) == pytest.approx(0.53)
    assert adaptive_entry_threshold(0.55, "neutral", 1.0, **REL) == pytest.approx(0.55)
    assert adaptive_entry_threshold(0.55, -1, 1.0, **REL) == pytest.approx(0.57)
    # Volatility 2: + 0.01 * (2 - 1); 10: + 0.01 * min(9, 3) = 0.03; 0.5 lowers nothing.
    assert adaptive_entry_threshold(0.55, 0, 2.0, **REL) == pytest.approx(0.56)
    assert adaptive_entry_threshold(0.55, 0, 10.0, **REL) == pytest.approx(0.58)
    assert adaptive_entry_threshold(0.55, 0, 0.5, **REL) == pytest.approx(0.55)
    # Kept inside (0.5, 1): 0.51 - 0.02 -> 0.501; 0.98 + 0.02 + 0.03 -> 0.99.
    assert adaptive_entry_threshold(0.51, 1, 1.0, **REL) == pytest.approx(0.501)
    assert adaptive_entry_threshold(0.98, -1, 9.0, **REL) == pytest.approx(0.99)
    arr = adaptive_entry_threshold(0.55, np.array([1, 0, -1], dtype=np.int8), np.ones(3), **REL)
    np.testing.assert_allclose(arr, [0.53, 0.55, 0.57])


@given(base_thr, vol, vol)
def test_threshold_bounded_ordered_and_rising_with_volatility(base, v1, v2):
    t = {c: adaptive_entry_threshold(base, c, v1, **REL) for c in (1, 0, -1)}
    assert all(0.5 < x < 1.0 for x in t.values())
    assert t[1] <= t[0] <= t[-1]
    if 0.53 <= base <= 0.93:  # no clipping at either end: strictly ordered
        assert t[1] < t[0] < t[-1]
    lo, hi = sorted((v1, v2))
    assert adaptive_entry_threshold(base, 0, lo, **REL) <= adaptive_entry_threshold(
        base, 0, hi, **REL
    )


@pytest.mark.parametrize(
    ("base", "regime", "match"),
    [
        (0.55, "bull", r"regime must be one of .*, got 'bull'"),
        (0.55, 2, r"regime codes must be in \{-1, 0, 1\}, got \[2\]"),
        (0.5, 0, r"base_threshold must be finite in \(0.5, 0.99\], got 0.5"),
    ],
)
def test_threshold_rejects_bad_inputs(base, regime, match):
    with pytest.raises(ValueError, match=match):
        adaptive_entry_threshold(base, regime, 1.0)


# ---- stops and take-profits -----------------------------------------------------------------


def test_levels_hand_computed():
    assert stop_distance_pct(0.01, 1.5, **REL) == pytest.approx(0.015)
    assert stop_distance_pct(0.01, 5.0, **REL) == pytest.approx(0.02)  # clipped at 2
    assert stop_distance_pct(0.01, 0.1, **REL) == pytest.approx(0.005)  # clipped at 0.5
    assert adaptive_stop_loss(100.0, 0.01, 1.0, **REL) == pytest.approx(99.0)
    assert adaptive_stop_loss(100.0, 0.01, 1.0, "short", **REL) == pytest.approx(101.0)
    assert adaptive_take_profit(100.0, 0.02, 1.0, **REL) == pytest.approx(102.0)
    assert adaptive_take_profit(100.0, 0.02, 1.0, -1, **REL) == pytest.approx(98.0)
    assert adaptive_stop_loss(200.0, 0.01, 1.5, **REL) == pytest.approx(197.0)  # 200 * (1 - 0.015)


@given(st.floats(1e-4, 0.2), vol, vol)
def test_stop_distance_non_decreasing_and_bounded(base, v1, v2):
    lo, hi = sorted((v1, v2))
    d_lo, d_hi = stop_distance_pct(base, lo, **REL), stop_distance_pct(base, hi, **REL)
    assert d_lo <= d_hi
    assert base * 0.5 - 1e-15 <= d_lo and d_hi <= base * 2.0 + 1e-15


@given(st.floats(1e-3, 1e6), st.floats(1e-4, 0.2), vol)
def test_levels_on_the_right_side_of_the_entry(price, base, v):
    assert (
        adaptive_stop_loss(price, base, v, "long", **REL)
        < price
        < adaptive_stop_loss(price, base, v, "short", **REL)
    )
    assert (
        adaptive_take_profit(price, base, v, "short", **REL)
        < price
        < adaptive_take_profit(price, base, v, "long", **REL)
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((100.0, 0.01, 1.0, "flat"), r"side must be 'long' or 'short' .*, got 'flat'"),
        ((100.0, 0.6, 2.0), r"stop distance 1.2 must be < 1"),
        ((0.0, 0.01, 1.0), r"entry_price must be finite in \(0.0, inf\], got 0.0"),
        ((100.0, 0.01, -1.0), r"volatility .* got -1.0"),
    ],
)
def test_levels_reject_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        adaptive_stop_loss(*args)


# ---- regimes --------------------------------------------------------------------------------


def test_regime_hand_computed_at_the_thresholds():
    # n equal returns: drift_z = n r / sqrt(n r^2) = sqrt(n): sqrt(7) = 2.65 >= 2.5 is a trend;
    # n = 6: sqrt(6) = 2.45 and autocorr_z = sqrt(6) * 5/6 = 2.04, both < 2.5: neutral.
    assert classify_regime([0.001] * 7) == "trend"
    assert classify_regime([-0.001] * 7) == "trend"
    assert classify_regime([0.001] * 6) == "neutral"
    # Alternating +-r, n = 9: autocorr_z = 3 * (-8 r^2) / (9 r^2) = -2.67 -> meanrev;
    # n = 8: sqrt(8) * (-7/8) = -2.47 > -2.5 -> neutral.
    alt = 0.001 * (-1.0) ** np.arange(9)
    assert classify_regime(alt) == "meanrev"
    assert classify_regime(alt[:8]) == "neutral"
    assert classify_regime(np.zeros(50)) == "neutral"  # no movement: no statistic


def test_regime_of_constructed_series():
    rng = np.random.default_rng(SEED)
    steady = 0.002 + rng.normal(0.0, 0.001, 96)
    assert classify_regime(steady) == "trend"
    assert classify_regime(steady, volatility=3.0, **REL) == "neutral"  # a volatility shock
    alternating = 0.002 * (-1.0) ** np.arange(96) + rng.normal(0.0, 0.0005, 96)
    assert classify_regime(alternating) == "meanrev"
    walks = rng.normal(0.0, 0.003, (400, 96))
    labels = [classify_regime(w) for w in walks]
    assert labels.count("neutral") / len(labels) > 0.9


def _mixed_series(n_seg: int, seed: int) -> np.ndarray:
    """Random walk, then a drifting segment, then an AR(1) with coefficient -0.7."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.002, 3 * n_seg)
    ar = np.zeros(n_seg)
    for i in range(1, n_seg):
        ar[i] = -0.7 * ar[i - 1] + noise[2 * n_seg + i]
    return np.r_[noise[:n_seg], 0.001 + noise[n_seg : 2 * n_seg], ar]


def test_vectorized_regimes_match_the_scalar_classifier():
    r = _mixed_series(300, SEED)
    lookback = 48
    rel_vol = np.ones(r.size)
    rel_vol[500:510] = 3.5
    codes = classify_regimes(r, lookback, rel_vol, **REL)
    assert codes.dtype == np.int8 and codes.shape == r.shape
    assert (codes[: lookback - 1] == 0).all()
    assert set(np.unique(codes)) == {-1, 0, 1}
    for t in range(lookback - 1, r.size):
        name = classify_regime(r[t - lookback + 1 : t + 1], rel_vol[t], **REL)
        assert REGIME_NAMES[int(codes[t])] == name, t
    assert (codes[500:510] == 0).all()


def test_regimes_of_a_short_series_are_neutral():
    assert (classify_regimes(np.full(10, 0.01), 20) == 0).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: classify_regime([0.01]), r"recent_returns must be 1-D with >= 2 values"),
        (lambda: classify_regime([0.01, np.nan]), r"recent_returns must be finite, got nan"),
        (lambda: classify_regimes(np.zeros(5), 1), r"lookback must be an integer >= 2, got 1"),
        (lambda: classify_regimes(np.zeros(5), 2, np.ones(4)), r"volatility has shape \(4,\)"),
    ],
)
def test_regime_rejects_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- relative volatility and config ---------------------------------------------------------


def test_relative_volatility_hand_computed():
    # lookback 2: [1/1, 2/mean(1,2), 3/mean(2,3), 4/mean(3,4)] = [1, 1.333, 1.2, 1.143]
    out = relative_volatility([1.0, 2.0, 3.0, 4.0], 2)
    np.testing.assert_allclose(out, [1.0, 2 / 1.5, 3 / 2.5, 4 / 3.5])
    # Expanding before the window fills: bar 1 with lookback 5 is 2 / mean(1, 2).
    assert relative_volatility([1.0, 2.0], 5)[1] == pytest.approx(2 / 1.5)
    np.testing.assert_allclose(relative_volatility(np.full(10, 0.003), 4), np.ones(10))
    with pytest.raises(ValueError, match=r"volatility .* got 0.0 at index 1"):
        relative_volatility([0.1, 0.0], 2)
    with pytest.raises(ValueError, match=r"lookback must be an integer >= 1, got 0"):
        relative_volatility([0.1], 0)
