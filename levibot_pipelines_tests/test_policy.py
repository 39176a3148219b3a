"""Policy: sizing, regimes, adaptive thresholds and levels, and the vectorized per-bar signals."""

import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from levibot_pipelines.core.trading.backtest import Signals
from levibot_pipelines.core.trading.policy import (
    REGIME_NAMES,
    PolicyConfig,
    PolicyOutput,
    adaptive_entry_threshold,
    adaptive_stop_loss,
    adaptive_take_profit,
    classify_regime,
    classify_regimes,
    policy_signals,
    relative_volatility,
    size_from_confidence,
    stop_distance_pct,
)

SEED = 11
unit = st.floats(0.0, 1.0)
vol = st.floats(0.01, 20.0)
unc = st.floats(0.0, 1.0)
base_thr = st.floats(0.501, 0.99)
SIGNAL_FIELDS = [f.name for f in fields(Signals)]


# ---- size_from_confidence -------------------------------------------------------------------


def test_size_hand_computed():
    assert size_from_confidence(0.6, 2.0) == pytest.approx(0.3)  # 1 * 0.6 * 1 / 2
    assert size_from_confidence(0.6, 2.0, uncertainty=0.05) == pytest.approx(0.15)  # / (1 + 1)
    assert size_from_confidence(0.2, 0.1) == pytest.approx(0.4)  # vol floored: 0.2 / 0.5
    assert size_from_confidence(0.5, 1.0, 0.5, 2.0) == pytest.approx(0.5)  # 2 * 0.5 * 0.5 / 1
    assert size_from_confidence(0.9, 1.0, max_size=0.5) == 0.5  # 0.9 capped
    assert size_from_confidence(0.29, 1.0, min_confidence=0.3) == 0.0
    assert size_from_confidence(0.3, 1.0, min_confidence=0.3) == pytest.approx(0.3)
    out = size_from_confidence(np.array([0.2, 0.4]), np.array([1.0, 2.0]))
    assert isinstance(out, np.ndarray) and np.allclose(out, [0.2, 0.2])
    assert isinstance(size_from_confidence(0.5, 1.0), float)


@given(unit, unit, vol, unc, st.floats(0.0, 1.0), st.floats(0.0, 2.0))
def test_size_grows_with_confidence_and_respects_cap_and_entry(c1, c2, v, u, min_conf, cap):
    lo, hi = sorted((c1, c2))
    kw = {"uncertainty": u, "min_confidence": min_conf, "max_size": cap}
    s_lo, s_hi = size_from_confidence(lo, v, **kw), size_from_confidence(hi, v, **kw)
    assert 0.0 <= s_lo <= s_hi <= cap
    if lo < min_conf:
        assert s_lo == 0.0


@given(unit, vol, vol, unc, unc)
def test_size_shrinks_with_volatility_and_uncertainty(c, v1, v2, u1, u2):
    (va, vb), (ua, ub) = sorted((v1, v2)), sorted((u1, u2))
    assert size_from_confidence(c, va, uncertainty=u1) >= size_from_confidence(
        c, vb, uncertainty=u1
    )
    assert size_from_confidence(c, v1, uncertainty=ua) >= size_from_confidence(
        c, v1, uncertainty=ub
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
    ],
)
def test_size_rejects_bad_inputs(kwargs, match):
    args = {"confidence": 0.5, "volatility": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        size_from_confidence(**args)


# ---- entry threshold ------------------------------------------------------------------------


def test_threshold_hand_computed():
    # base 0.55 at volatility 1: trend 0.55 - 0.02, neutral 0.55, meanrev 0.55 + 0.02.
    assert adaptive_entry_threshold(0.55, "trend", 1.0) == pytest.approx(0.53)
    assert adaptive_entry_threshold(0.55, "neutral", 1.0) == pytest.approx(0.55)
    assert adaptive_entry_threshold(0.55, -1, 1.0) == pytest.approx(0.57)
    # Volatility 2: + 0.01 * (2 - 1); 10: + 0.01 * min(9, 3) = 0.03; 0.5 lowers nothing.
    assert adaptive_entry_threshold(0.55, 0, 2.0) == pytest.approx(0.56)
    assert adaptive_entry_threshold(0.55, 0, 10.0) == pytest.approx(0.58)
    assert adaptive_entry_threshold(0.55, 0, 0.5) == pytest.approx(0.55)
    # Kept inside (0.5, 1): 0.51 - 0.02 -> 0.501; 0.98 + 0.02 + 0.03 -> 0.99.
    assert adaptive_entry_threshold(0.51, 1, 1.0) == pytest.approx(0.501)
    assert adaptive_entry_threshold(0.98, -1, 9.0) == pytest.approx(0.99)
    arr = adaptive_entry_threshold(0.55, np.array([1, 0, -1], dtype=np.int8), np.ones(3))
    np.testing.assert_allclose(arr, [0.53, 0.55, 0.57])


@given(base_thr, vol, vol)
def test_threshold_bounded_ordered_and_rising_with_volatility(base, v1, v2):
    t = {c: adaptive_entry_threshold(base, c, v1) for c in (1, 0, -1)}
    assert all(0.5 < x < 1.0 for x in t.values())
    assert t[1] <= t[0] <= t[-1]
    if 0.53 <= base <= 0.93:  # no clipping at either end: strictly ordered
        assert t[1] < t[0] < t[-1]
    lo, hi = sorted((v1, v2))
    assert adaptive_entry_threshold(base, 0, lo) <= adaptive_entry_threshold(base, 0, hi)


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
    assert stop_distance_pct(0.01, 1.5) == pytest.approx(0.015)
    assert stop_distance_pct(0.01, 5.0) == pytest.approx(0.02)  # clipped at 2
    assert stop_distance_pct(0.01, 0.1) == pytest.approx(0.005)  # clipped at 0.5
    assert adaptive_stop_loss(100.0, 0.01, 1.0) == pytest.approx(99.0)
    assert adaptive_stop_loss(100.0, 0.01, 1.0, "short") == pytest.approx(101.0)
    assert adaptive_take_profit(100.0, 0.02, 1.0) == pytest.approx(102.0)
    assert adaptive_take_profit(100.0, 0.02, 1.0, -1) == pytest.approx(98.0)
    assert adaptive_stop_loss(200.0, 0.01, 1.5) == pytest.approx(197.0)  # 200 * (1 - 0.015)


@given(st.floats(1e-4, 0.2), vol, vol)
def test_stop_distance_non_decreasing_and_bounded(base, v1, v2):
    lo, hi = sorted((v1, v2))
    d_lo, d_hi = stop_distance_pct(base, lo), stop_distance_pct(base, hi)
    assert d_lo <= d_hi
    assert base * 0.5 - 1e-15 <= d_lo and d_hi <= base * 2.0 + 1e-15


@given(st.floats(1e-3, 1e6), st.floats(1e-4, 0.2), vol)
def test_levels_on_the_right_side_of_the_entry(price, base, v):
    assert (
        adaptive_stop_loss(price, base, v, "long")
        < price
        < adaptive_stop_loss(price, base, v, "short")
    )
    assert (
        adaptive_take_profit(price, base, v, "short")
        < price
        < adaptive_take_profit(price, base, v, "long")
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
    assert classify_regime(steady, volatility=3.0) == "neutral"  # a volatility shock
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
    codes = classify_regimes(r, lookback, rel_vol)
    assert codes.dtype == np.int8 and codes.shape == r.shape
    assert (codes[: lookback - 1] == 0).all()
    assert set(np.unique(codes)) == {-1, 0, 1}
    for t in range(lookback - 1, r.size):
        name = classify_regime(r[t - lookback + 1 : t + 1], rel_vol[t])
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


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_threshold": 0.5}, r"base_threshold must be finite in \(0.5, 0.99\], got 0.5"),
        ({"base_threshold": 1.0}, r"base_threshold .* got 1.0"),
        ({"exit_threshold": 0.6}, r"exit_threshold \(<= base_threshold\) .* got 0.6"),
        ({"base_stop_pct": 0.6}, r"base_stop_pct .* got 0.6"),
        ({"max_uncertainty": -0.1}, r"max_uncertainty .* got -0.1"),
        ({"regime_lookback": 1}, r"regime_lookback must be an integer >= 2, got 1"),
        ({"vol_lookback": 2.5}, r"vol_lookback must be an integer >= 1, got 2.5"),
    ],
)
def test_config_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolicyConfig(**kwargs)


# ---- policy_signals -------------------------------------------------------------------------

SMALL = PolicyConfig(regime_lookback=20, vol_lookback=50, allow_short=True)


def _inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.clip(rng.normal(0.5, 0.08, n), 0.0, 1.0)
    p[rng.random(n) < 0.1] = np.nan
    return {
        "p": p,
        "confidence": np.abs(2 * p - 1),
        "volatility": rng.uniform(0.001, 0.005, n),
        "ret_1": rng.normal(0.0, 0.003, n),
        "uncertainty": rng.uniform(0.0, 0.15, n),
    }


def _flat(n: int, p: float | list[float], **kw) -> PolicyOutput:
    """Constant volatility (relative 1) and zero returns (neutral), so threshold = base, and
    confidence ``|2p - 1|``."""
    pa = np.broadcast_to(np.asarray(p, dtype=float), (n,)).copy()
    return policy_signals(pa, np.abs(2 * pa - 1), np.full(n, 0.002), np.zeros(n), **kw)


def test_policy_hand_computed_bar():
    # p 0.6 -> confidence 0.2, relative volatility 1, neutral: threshold 0.55, size 0.2 / 1.
    out = _flat(5, [0.6, 0.54, 0.45, 0.6, 0.6], uncertainty=[0.0, 0.0, 0.0, 0.05, 0.12])
    s = out.signals
    np.testing.assert_allclose(out.threshold, 0.55)
    np.testing.assert_array_equal(s.entry_side, [1, 0, 0, 1, 0])  # 0.12 > cap 0.10
    # Bar 3: 0.2 / (1 + 0.05 / 0.05) = 0.1.
    np.testing.assert_allclose(s.size, [0.2, 0.0, 0.0, 0.1, 0.0])
    np.testing.assert_allclose(s.stop_pct, 0.01)
    np.testing.assert_allclose(s.take_profit_pct, 0.02)
    np.testing.assert_array_equal(s.exit_long, [False, False, True, False, False])
    # 1 - exit_threshold = 0.5: every p above it exits a short.
    np.testing.assert_array_equal(s.exit_short, [True, True, False, True, True])
    np.testing.assert_array_equal(out.blocked_uncertain, [False, False, False, False, True])
    assert s.entry_side.dtype == np.int8 and len(s) == 5


def test_policy_is_causal():
    n = 400
    full_in = _inputs(n, SEED)
    other = _inputs(n, SEED + 1)
    full = policy_signals(**full_in, cfg=SMALL)
    for t in (0, 19, 49, 123, 398):
        cut = policy_signals(**{k: v[: t + 1] for k, v in full_in.items()}, cfg=SMALL)
        changed = {k: np.r_[v[: t + 1], other[k][t + 1 :]] for k, v in full_in.items()}
        alt = policy_signals(**changed, cfg=SMALL)
        for out in (cut, alt):
            for f in SIGNAL_FIELDS:
                np.testing.assert_array_equal(
                    getattr(out.signals, f)[: t + 1], getattr(full.signals, f)[: t + 1], f
                )
            for f in ("threshold", "regime", "rel_volatility", "blocked_uncertain"):
                np.testing.assert_array_equal(getattr(out, f)[: t + 1], getattr(full, f)[: t + 1])
        if t < 300:  # the altered inputs do change the later signals
            assert (alt.signals.entry_side[t + 1 :] != full.signals.entry_side[t + 1 :]).any()


def test_missing_prediction_exits_and_never_enters():
    inputs = _inputs(500, SEED)
    s = policy_signals(**inputs, cfg=SMALL).signals
    nan = np.isnan(inputs["p"])
    assert nan.any() and (s.entry_side != 0).any()
    assert (s.entry_side[nan] == 0).all() and (s.size[nan] == 0).all()
    assert s.exit_long[nan].all() and s.exit_short[nan].all()


def test_no_short_unless_allowed():
    inputs = {**_inputs(500, SEED), "uncertainty": None}
    with_short = policy_signals(**inputs, cfg=SMALL).signals.entry_side
    long_only = policy_signals(**inputs, cfg=PolicyConfig(regime_lookback=20)).signals.entry_side
    assert (with_short == -1).any()
    assert not (long_only == -1).any() and (long_only == 1).any()


def test_uncertainty_cap_blocks_entries():
    n = 10
    high = _flat(n, 0.9, uncertainty=np.full(n, 0.2))
    assert (high.signals.entry_side == 0).all() and high.blocked_uncertain.all()
    unknown = _flat(n, 0.9, uncertainty=np.full(n, np.nan))
    assert (unknown.signals.entry_side == 0).all() and unknown.blocked_uncertain.all()
    low = _flat(n, 0.9, uncertainty=np.full(n, 0.05))
    assert (low.signals.entry_side == 1).all() and not low.blocked_uncertain.any()
    no_cap = _flat(n, 0.9, uncertainty=np.full(n, 0.2), cfg=PolicyConfig(max_uncertainty=None))
    # 0.8 / (1 + 0.2 / 0.05) = 0.16
    np.testing.assert_allclose(no_cap.signals.size, 0.16)


def test_kill_switch_multiplier_cuts_or_stops_entries():
    full = _flat(10, 0.9)
    half = _flat(10, 0.9, size_multiplier=0.5)
    halted = _flat(10, 0.9, size_multiplier=0.0)
    np.testing.assert_allclose(full.signals.size, 0.8)
    np.testing.assert_allclose(half.signals.size, 0.4)
    assert (halted.signals.entry_side == 0).all() and (halted.signals.size == 0).all()


def test_entry_is_never_flagged_as_exit_of_the_same_side():
    # Exit threshold = base 0.55; a steady uptrend lowers the entry threshold to 0.53, so
    # p = 0.54 both clears the entry and is below the exit threshold: the entry wins.
    n = 40
    cfg = PolicyConfig(exit_threshold=0.55, regime_lookback=20)
    out = policy_signals(
        np.full(n, 0.54), np.full(n, 0.08), np.full(n, 0.002), np.full(n, 0.001), cfg
    )
    assert (out.regime[19:] == 1).all()
    assert (out.signals.entry_side[19:] == 1).all() and not out.signals.exit_long[19:].any()
    assert out.signals.exit_long[:19].all()  # neutral, threshold 0.55: no entry, exit
    inputs = _inputs(2000, SEED)
    s = policy_signals(**inputs, cfg=SMALL).signals
    assert not (s.exit_long & (s.entry_side == 1)).any()
    assert not (s.exit_short & (s.entry_side == -1)).any()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"p": [0.5, 0.5, 1.5]}, r"p must be finite in \[0.0, 1.0\] or NaN, got 1.5 at index 2"),
        ({"p": [0.5, 0.5]}, r"inputs must have one shape \(n,\), got .*'p': \(2,\)"),
        ({"volatility": [0.01, -0.01, 0.01]}, r"volatility .* got -0.01 at index 1"),
        ({"ret_1": [0.0, np.nan, 0.0]}, r"ret_1 must be finite, got nan at index 1"),
        ({"uncertainty": [0.0, -1.0, 0.0]}, r"uncertainty .* got -1.0 at index 1"),
        ({"size_multiplier": 1.5}, r"size_multiplier must be finite in \[0.0, 1.0\], got 1.5"),
        ({"p": []}, r"p must be a non-empty 1-D array"),
    ],
)
def test_policy_rejects_bad_inputs(change, match):
    args = {
        "p": [0.5, 0.6, 0.7],
        "confidence": [0.0, 0.2, 0.4],
        "volatility": [0.01] * 3,
        "ret_1": [0.0] * 3,
        **change,
    }
    with pytest.raises(ValueError, match=match):
        policy_signals(**args)


def test_policy_outputs_are_valid_signals():
    out = policy_signals(**_inputs(1000, SEED), cfg=SMALL)
    s = out.signals
    assert set(np.unique(s.entry_side)) <= {-1, 0, 1}
    assert (s.size >= 0).all() and (s.size <= SMALL.max_size).all()
    assert ((s.size > 0) == (s.entry_side != 0)).all()
    assert (s.stop_pct > 0).all() and (s.take_profit_pct > s.stop_pct).all()
    assert all(math.isfinite(x) for x in out.rel_volatility)
