"""PSI: worked values, known shifts, properties, the per-symbol drift report and its errors."""

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from levibot_pipelines.core.trading.drift import (
    REPORT_SCHEMA,
    SPREAD_MARGIN,
    beyond_spread,
    drift_alarm,
    drift_level,
    drift_report,
    feature_psi,
    max_level,
    psi,
    psi_level,
)

TF = 900_000


def test_psi_two_bin_worked_example():
    # reference [0, 1, 2, 3], 2 bins: median edge 1.5 -> r = [2/4, 2/4] = [0.5, 0.5]
    # current [0, 0, 0, 3] -> c = [3/4, 1/4]
    # PSI = (0.75 - 0.5) ln(0.75 / 0.5) + (0.25 - 0.5) ln(0.25 / 0.5)
    #     = 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3 = 0.274653
    assert psi([0, 1, 2, 3], [0, 0, 0, 3], n_bins=2) == pytest.approx(0.25 * math.log(3))
    # A value on the edge belongs to the lower bin: [1.5] -> c = [1, 0] -> floored [1, 1e-4]
    # PSI = 0.5 ln(1 / 0.5) + (1e-4 - 0.5) ln(1e-4 / 0.5) = 0.346574 + 4.258140 = 4.604714
    expected = 0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert psi([0, 1, 2, 3], [1.5], n_bins=2) == pytest.approx(expected)


def test_psi_separates_no_shift_scale_and_mean_shift():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(20_000)
    same = psi(ref, rng.standard_normal(5_000))
    scaled = psi(ref, 1.5 * rng.standard_normal(5_000))
    shifted = psi(ref, 1.0 + rng.standard_normal(5_000))
    assert same < 0.01  # sampling noise only: ~ (bins - 1) / n_cur
    assert 0.1 < scaled < 0.25  # warn band (measured 0.20)
    assert shifted > 0.25  # error band (measured 0.94)
    assert psi(ref, ref) == 0.0


def test_psi_constant_reference_has_no_division_by_zero():
    assert psi([2.0, 2.0, 2.0], [2.0, 2.0]) == 0.0
    # r = [0, 1, 0] -> [1e-4, 1, 1e-4]; all current above: c = [1e-4, 1e-4, 1]
    # PSI = 0 + (1e-4 - 1) ln(1e-4) + (1 - 1e-4) ln(1e4) = 2 (1 - 1e-4) ln(1e4) = 18.4188
    big = 2 * (1 - 1e-4) * math.log(1e4)
    assert psi([2.0, 2.0], [3.0]) == pytest.approx(big)
    assert psi([2.0, 2.0], [1.0]) == pytest.approx(big)  # below is just as far


def test_psi_drops_nans():
    assert psi([0, 1, np.nan, 2, 3], [0, 0, 0, 3, np.nan], n_bins=2) == pytest.approx(
        0.25 * math.log(3)
    )


@pytest.mark.parametrize(
    ("reference", "current", "kwargs", "match"),
    [
        ([], [1.0], {}, "reference is empty"),
        ([1.0], [np.nan, np.nan], {}, "current is empty \\(or all NaN\\)"),
        ([[1.0, 2.0]], [1.0], {}, "reference must be a 1-D array, got shape \\(1, 2\\)"),
        ([1.0, np.inf], [1.0], {}, "reference must be finite, got inf"),
        ([1.0, 2.0], [1.0], {"n_bins": 1}, "n_bins=1: expected an integer >= 2"),
        ([1.0, 2.0], [1.0], {"eps": 0.0}, "eps=0.0: expected a number in"),
    ],
)
def test_psi_errors_name_the_bad_input(reference, current, kwargs, match):
    with pytest.raises(ValueError, match=match):
        psi(reference, current, **kwargs)


samples = st.lists(st.integers(-50, 50).map(float), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(ref=samples, cur=samples, n_bins=st.integers(2, 12))
def test_psi_properties(ref, cur, n_bins):
    value = psi(ref, cur, n_bins=n_bins)
    assert value >= 0.0 and math.isfinite(value)
    assert psi(ref, list(reversed(ref)), n_bins=n_bins) == 0.0  # order does not matter
    # Bins follow the reference, so shifting both samples changes nothing - except for a value
    # lying exactly on an interpolated edge (e.g. 1.0 between 0 and 3 at 2/3), which rounding
    # may move to either side; such ties are left out.
    edges = np.quantile(ref, np.linspace(0, 1, n_bins + 1)[1:-1])
    assume(np.min(np.abs(np.subtract.outer(np.asarray(cur), edges))) > 1e-6)
    shifted = psi([x + 7 for x in ref], [x + 7 for x in cur], n_bins=n_bins)
    assert shifted == pytest.approx(value)


def test_psi_level_thresholds_are_inclusive_below():
    assert psi_level(0.1, 0.1, 0.25) == "ok"
    assert psi_level(0.1000001, 0.1, 0.25) == "warn"
    assert psi_level(0.25, 0.1, 0.25) == "warn"
    assert psi_level(0.2500001, 0.1, 0.25) == "error"
    with pytest.raises(ValueError, match="expected 0 <= warn <= error"):
        psi_level(0.3, 0.3, 0.2)
    with pytest.raises(ValueError, match="psi=nan: expected a number >= 0"):
        psi_level(float("nan"), 0.1, 0.25)


def _features(n: int, seed: int = 1) -> pl.DataFrame:
    """Two symbols, n bars each: AAA's f1 shifts by +1 sd in its last 100 bars, f2 never does."""
    rng = np.random.default_rng(seed)
    frames = []
    for symbol in ("AAA", "BBB"):
        f1 = rng.standard_normal(n)
        if symbol == "AAA":
            f1[-100:] += 1.0
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "timestamp": np.arange(n, dtype=np.int64) * TF,
                    "f1": f1,
                    "f2": rng.standard_normal(n),
                }
            )
        )
    return pl.concat(frames).sample(fraction=1.0, shuffle=True, seed=seed)  # order-agnostic


def test_drift_report_rows_levels_and_windows():
    feats = _features(1000)
    windows = {"AAA": (0, 599 * TF), "BBB": (0, 599 * TF)}
    report = drift_report(feats, windows, 100, ["f1", "f2"], warn=0.1, error=0.25)
    assert report.schema == pl.Schema(REPORT_SCHEMA)
    assert report.select("symbol", "feature").rows() == [
        ("AAA", "f1"),
        ("AAA", "f2"),
        ("BBB", "f1"),
        ("BBB", "f2"),
    ]
    assert report["n_reference"].to_list() == [600] * 4  # bars 0..599 inclusive
    assert report["n_current"].to_list() == [100] * 4  # bars 900..999
    aaa_f1 = report.row(0, named=True)
    assert aaa_f1["psi"] > 0.25 and aaa_f1["level"] == "error"
    assert max_level(report) == "error"
    assert max_level(report.filter(pl.col("symbol") == "BBB")) in ("ok", "warn")
    # The +1 sd shift is beyond any 100-bar window inside the 600 training bars; iid noise
    # is not.
    assert aaa_f1["beyond_training"] and aaa_f1["psi"] > aaa_f1["psi_in_training"] > 0
    assert not any(report.filter(pl.col("symbol") == "BBB")["beyond_training"])
    alarm = drift_alarm(report)
    assert (alarm["symbol"], alarm["feature"]) == ("AAA", "f1")
    # Current rows inside the reference window are excluded: the last 100 bars overlap it
    # by 50 (bars 900..949 lie in [0, 949]), so only 50 remain.
    overlap = drift_report(feats, {"BBB": (0, 949 * TF)}, 100, ["f2"], 0.1, 0.25)
    assert overlap.row(0, named=True)["n_current"] == 50
    assert overlap.row(0, named=True)["n_reference"] == 950


def test_max_level_orders_levels():
    def rep(levels):
        return pl.DataFrame({"level": levels}, schema={"level": pl.String})

    assert max_level(rep([])) == "ok"
    assert max_level(rep(["ok", "warn", "ok"])) == "warn"
    assert max_level(rep(["warn", "error"])) == "error"
    with pytest.raises(ValueError, match=r"report has levels \['bad'\]"):
        max_level(rep(["bad"]))


def test_feature_psi_per_column_and_errors():
    ref = pl.DataFrame({"a": [0.0, 1, 2, 3], "b": [1.0, 2, 3, 4]})
    cur = pl.DataFrame({"a": [0.0, 1, 2, 3], "b": [None, None, None, None]}, strict=False)
    assert feature_psi(ref, ref, ["a", "b"]) == {"a": 0.0, "b": 0.0}
    with pytest.raises(ValueError, match="BTC current b is empty"):
        feature_psi(ref, cur, ["a", "b"], label="BTC")
    with pytest.raises(ValueError, match=r"current lacks feature columns \['c'\]"):
        feature_psi(ref.with_columns(c=pl.lit(1.0)), ref, ["c"])
    with pytest.raises(ValueError, match="columns is empty"):
        feature_psi(ref, ref, [])


@pytest.mark.parametrize(
    ("windows", "recent", "match"),
    [
        ({"CCC": (0, 10 * TF)}, 100, "CCC: no rows in features"),
        ({"AAA": (5 * TF, 0)}, 100, "AAA: reference window start 4500000 > end 0"),
        ({"AAA": (0, 999 * TF)}, 100, "AAA: 1000 reference rows .* and 0 current rows"),
        ({"AAA": (10**15, 10**15 + 1)}, 100, "AAA: 0 reference rows"),
        ({"AAA": (0, TF)}, 0, "recent_bars=0: expected an integer >= 1"),
        ({}, 100, "symbol_windows is empty"),
    ],
)
def test_drift_report_errors_name_the_symbol(windows, recent, match):
    with pytest.raises(ValueError, match=match):
        drift_report(_features(1000), windows, recent, ["f1"], 0.1, 0.25)


def test_slow_feature_past_the_error_threshold_but_within_training_is_ok():
    # A slow oscillation (period 400 bars) sampled for 2000 bars: any 100-bar window covers a
    # quarter period, so its PSI against the whole history is large (> 0.25) although the
    # process never changes; the newest window is no stranger than the windows in training.
    # The textbook level would be ERROR; the drift level is ok, and nothing alarms.
    t = np.arange(2100)
    feats = pl.DataFrame(
        {"symbol": "AAA", "timestamp": t.astype(np.int64) * TF, "f": np.sin(2 * np.pi * t / 400)}
    )
    report = drift_report(feats, {"AAA": (0, 1999 * TF)}, 100, ["f"], 0.1, 0.25)
    row = report.row(0, named=True)
    assert psi_level(row["psi"], 0.1, 0.25) == "error" and row["level"] == "ok"
    assert row["psi_in_training"] >= row["psi"] and not row["beyond_training"]
    assert max_level(report) == "ok" and drift_alarm(report) is None


@pytest.mark.parametrize(
    ("value", "spread", "expected"),
    [
        (0.05, 0.01, "ok"),  # below warn: ok whatever the spread
        (0.20, 0.20, "ok"),  # warn band, within the spread
        (0.29, 0.20, "ok"),  # within 1.5 x 0.20 = 0.30
        (0.31, 0.20, "error"),  # past 0.25 and past 0.30: a shock
        (0.20, 0.10, "warn"),  # past 1.5 x 0.10 = 0.15, but not past 0.25
        (0.60, 0.40, "ok"),  # past 0.25, within 1.5 x 0.40 = 0.60 (inclusive)
        (0.61, 0.40, "error"),
        (0.05, math.nan, "ok"),  # unknown spread: textbook level ...
        (0.20, math.nan, "warn"),
        (5.00, math.nan, "warn"),  # ... but never ERROR without a spread to beat
    ],
)
def test_drift_level_is_the_textbook_level_beyond_the_in_training_spread(value, spread, expected):
    assert SPREAD_MARGIN == 1.5
    assert drift_level(value, spread, 0.1, 0.25) == expected


def test_beyond_spread_needs_the_margin_and_a_known_spread():
    assert beyond_spread(0.31, 0.2) and not beyond_spread(0.29, 0.2)  # 1.5 x 0.2 = 0.3
    assert beyond_spread(0.21, 0.2, margin=1.0)
    assert not beyond_spread(5.0, math.nan)


def test_drift_level_rejects_bad_inputs():
    with pytest.raises(ValueError, match="psi_in_training=-0.1: expected a number >= 0 or NaN"):
        drift_level(0.3, -0.1, 0.1, 0.25)
    with pytest.raises(ValueError, match="margin=0.5: expected a number >= 1"):
        drift_level(0.3, 0.1, 0.1, 0.25, margin=0.5)
    with pytest.raises(ValueError, match="psi=nan"):
        drift_level(math.nan, 0.1, 0.1, 0.25)


def test_short_reference_warns_but_never_alarms():
    # 150 reference bars hold one 100-bar window: no spread (NaN); the +1 sd shift of AAA's f1
    # is textbook ERROR but only WARN here, and the kill-switch has nothing to act on.
    report = drift_report(_features(1000), {"AAA": (750 * TF, 899 * TF)}, 100, ["f1"], 0.1, 0.25)
    row = report.row(0, named=True)
    assert math.isnan(row["psi_in_training"]) and not row["beyond_training"]
    assert row["psi"] > 0.25 and row["level"] == "warn" and drift_alarm(report) is None
