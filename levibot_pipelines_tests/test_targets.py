"""Forward returns aligned with execution: hand-computed values, truncation, errors."""

import math

import numpy as np
import pytest

from levibot_pipelines.core.data.targets import (
    forward_log_returns,
    forward_log_returns_multi,
    planted_edge_market,
)

OPEN = np.array([100.0, 101.0, 102.0, 99.0, 105.0, 104.0])


def test_forward_returns_by_hand():
    # h=1: r[t] = log(open[t+2] / open[t+1]): t=0 log(102/101), t=1 log(99/102),
    # t=2 log(105/99), t=3 log(104/105); t=4, 5 unknown (need open[6], open[7]).
    r = forward_log_returns(OPEN, 1)
    want = [math.log(102 / 101), math.log(99 / 102), math.log(105 / 99), math.log(104 / 105)]
    np.testing.assert_allclose(r[:4], want)
    assert np.isnan(r[4:]).all()
    # h=3: t=0 log(open[4] / open[1]) = log(105/101), t=1 log(104/102); t >= 2 unknown.
    r3 = forward_log_returns(OPEN, 3)
    np.testing.assert_allclose(r3[:2], [math.log(105 / 101), math.log(104 / 102)])
    assert np.isnan(r3[2:]).all()


def test_too_short_for_the_horizon_is_all_nan():
    assert np.isnan(forward_log_returns(OPEN, 5)).all()
    assert forward_log_returns(OPEN, 5).shape == (6,)


@pytest.mark.parametrize("h", [1, 2, 4])
def test_truncation_values_never_change_and_are_nan_without_their_bars(h):
    rng = np.random.default_rng(0)
    o = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60)))
    full = forward_log_returns(o, h)
    for cut in range(h + 2, 60):
        part = forward_log_returns(o[:cut], h)
        known = cut - 1 - h  # t with t + 1 + h <= cut - 1
        np.testing.assert_array_equal(part[:known], full[:known])
        assert np.isnan(part[known:]).all()


def test_several_horizons_at_once():
    out = forward_log_returns_multi(OPEN, (1, 3, 1))
    assert list(out) == [1, 3]
    np.testing.assert_array_equal(out[3], forward_log_returns(OPEN, 3))
    with pytest.raises(ValueError, match="at least one horizon"):
        forward_log_returns_multi(OPEN, ())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"open_": [100.0, -1.0, 2.0], "horizon": 1}, "open must be > 0"),
        ({"open_": [100.0, np.nan], "horizon": 1}, "open must be finite"),
        ({"open_": OPEN, "horizon": 0}, "horizon must be an integer >= 1"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        forward_log_returns(**kwargs)


def test_planted_market_carries_its_edge_at_its_horizon():
    df = planted_edge_market(60_000, edge_bps=60.0, horizon=16, seed=1)
    r = forward_log_returns(df["open"].to_numpy(), 16)
    ev = df["event"].to_numpy()
    assert np.nanmean(r[ev > 0]) * 1e4 == pytest.approx(60.0, abs=10.0)
    assert np.nanmean(r[ev < 0]) * 1e4 == pytest.approx(-60.0, abs=10.0)
    assert abs(np.nanmean(r[ev == 0]) * 1e4) < 3.0
    assert (df["score"].to_numpy()[ev > 0] > 0.6).all()
    assert (df["low"] <= df[["open", "close"]].min_horizontal()).all()
    assert (df["high"] >= df[["open", "close"]].max_horizontal()).all()
    assert planted_edge_market(60_000, edge_bps=60.0, horizon=16, seed=1).equals(df)  # seeded
    # No edge: the score tells nothing about r_16.
    flat = planted_edge_market(60_000, edge_bps=0.0, horizon=16, seed=1)
    r0 = forward_log_returns(flat["open"].to_numpy(), 16)
    assert abs(np.nanmean(r0[flat["score"].to_numpy() > 0.6]) * 1e4) < 10.0
