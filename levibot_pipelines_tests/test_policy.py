"""Policy: the config and the vectorized per-bar signals."""

import math
from dataclasses import fields

import numpy as np
import pytest

from levibot_pipelines.core.trading.backtest import Signals
from levibot_pipelines.core.trading.policy import PolicyConfig, PolicyOutput, policy_signals

SEED = 11
SIGNAL_FIELDS = [f.name for f in fields(Signals)]
# The settings' defaults: LEVIBOT_ENTRY_THRESHOLD, LEVIBOT_ALLOW_SHORT, LEVIBOT_MAX_UNCERTAINTY.
CONFIGURED = {"base_threshold": 0.55, "allow_short": False, "max_uncertainty": 0.10}


def policy(**changes) -> PolicyConfig:
    """A ``PolicyConfig`` with the configured defaults, ``changes`` on top."""
    return PolicyConfig(**{**CONFIGURED, **changes})


def test_config_takes_the_configured_values_from_its_caller():
    # No defaults to drift from LEVIBOT_ENTRY_THRESHOLD / _ALLOW_SHORT / _MAX_UNCERTAINTY.
    with pytest.raises(TypeError, match="base_threshold.*allow_short.*max_uncertainty"):
        PolicyConfig()  # type: ignore[call-arg]


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
        policy(**kwargs)


# ---- policy_signals -------------------------------------------------------------------------

SMALL = policy(regime_lookback=20, vol_lookback=50, allow_short=True)


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
    kw.setdefault("cfg", policy())
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
    long_only = policy_signals(**inputs, cfg=policy(regime_lookback=20)).signals.entry_side
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
    no_cap = _flat(n, 0.9, uncertainty=np.full(n, 0.2), cfg=policy(max_uncertainty=None))
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
    cfg = policy(exit_threshold=0.55, regime_lookback=20)
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
        policy_signals(**args, cfg=policy())


def test_policy_outputs_are_valid_signals():
    out = policy_signals(**_inputs(1000, SEED), cfg=SMALL)
    s = out.signals
    assert set(np.unique(s.entry_side)) <= {-1, 0, 1}
    assert (s.size >= 0).all() and (s.size <= SMALL.max_size).all()
    assert ((s.size > 0) == (s.entry_side != 0)).all()
    assert (s.stop_pct > 0).all() and (s.take_profit_pct > s.stop_pct).all()
    assert all(math.isfinite(x) for x in out.rel_volatility)
