import numpy as np
import pytest

from levibot_pipelines.core.data.windows import gather_windows, labeled_ends, window_ends

TF = 900_000


def _grid(bars: list[int]) -> np.ndarray:
    """Open times (ms) of the given bar numbers on the 15m grid."""
    return np.asarray(bars, dtype=np.int64) * TF + 1_700_000_100_000 // TF * TF


def _table(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closes, features (ret_1 and a row id) and labels laid out like the feature table."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ret_1 = np.r_[np.nan, np.diff(np.log(close))]  # known at the close of t
    fwd_ret = np.r_[np.diff(np.log(close)), np.nan]  # close(t) -> close(t + 1), null at the end
    X = np.column_stack([ret_1, np.arange(n)]).astype(np.float32)
    y_up = np.where(np.isnan(fwd_ret), np.nan, (fwd_ret > 0).astype(np.float64))
    return X, fwd_ret, y_up


def test_window_ends_skip_gaps_hand_computed():
    # bars 0..5, then a gap (6, 7 missing), then 8..11
    ts = _grid([0, 1, 2, 3, 4, 5, 8, 9, 10, 11])
    np.testing.assert_array_equal(window_ends(ts, 3, TF), [2, 3, 4, 5, 8, 9])
    np.testing.assert_array_equal(window_ends(ts, 1, TF), np.arange(10))
    np.testing.assert_array_equal(window_ends(ts, 5, TF), [4, 5])
    assert window_ends(ts, 7, TF).size == 0
    assert window_ends(ts[:2], 3, TF).dtype == np.int64


def test_duplicates_and_unsorted_rows_break_windows():
    ts = _grid([0, 1, 2, 2, 3, 4, 6, 5, 6, 7])
    # steps: 1 1 0 1 1 2 -1 1 1 -> only rows whose last 2 steps are both +1 bar end a 3-window
    np.testing.assert_array_equal(window_ends(ts, 3, TF), [2, 5, 9])


def test_window_equals_rows_and_never_crosses_a_gap():
    rng = np.random.default_rng(3)
    bars = np.sort(rng.choice(400, size=300, replace=False))  # random gaps
    ts = _grid(bars.tolist())
    X = rng.normal(size=(300, 4)).astype(np.float32)
    L = 6
    ends = window_ends(ts, L, TF)
    assert ends.size > 0
    W = gather_windows(X, ends, L)
    assert W.shape == (ends.size, L, 4) and W.dtype == np.float32
    for w, t in zip(W, ends, strict=True):
        np.testing.assert_array_equal(w, X[t - L + 1 : t + 1])
        assert np.all(np.diff(ts[t - L + 1 : t + 1]) == TF)
    # every gap-free run of L rows is an end: nothing valid is dropped
    brute = [t for t in range(L - 1, 300) if np.all(np.diff(ts[t - L + 1 : t + 1]) == TF)]
    np.testing.assert_array_equal(ends, brute)


def test_live_window_equals_backtest_window():
    n, L = 120, 16
    ts = _grid(list(range(50)) + list(range(53, 53 + n - 50)))
    X, _, _ = _table(n)
    full_ends = window_ends(ts, L, TF)
    full = gather_windows(X, full_ends, L)
    for t in (15, 49, 64, 65, 90, n - 1):
        live_ends = window_ends(ts[: t + 1], L, TF)  # the data as it stood at the close of t
        assert (t in live_ends) == (t in full_ends)
        if t in full_ends:
            assert live_ends[-1] == t
            live = gather_windows(X[: t + 1], live_ends[-1:], L)[0]
            np.testing.assert_array_equal(live, full[np.searchsorted(full_ends, t)])


def test_label_alignment():
    n, L = 60, 5
    X, fwd_ret, y_up = _table(n)
    ends = labeled_ends(window_ends(_grid(list(range(n))), L, TF), y_up, fwd_ret)
    assert ends[-1] == n - 2  # the newest row has no label yet: a live window, not a training one
    W = gather_windows(X, ends, L)
    # the window ending at i is paired with y[i]; its last row is row i itself ...
    np.testing.assert_array_equal(W[:, -1, 1], ends)
    # ... and the label is the move of the NEXT bar, which no window ending at i contains
    np.testing.assert_array_equal(y_up[ends], X[ends + 1, 0] > 0)
    np.testing.assert_allclose(fwd_ret[ends], X[ends + 1, 0], rtol=1e-5)


def test_invalid_inputs_raise():
    X = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="window end 2 < length - 1 = 3"):
        gather_windows(X, np.array([2, 5]), 4)
    with pytest.raises(ValueError, match="window end 10 is past the last row 9"):
        gather_windows(X, np.array([10]), 4)
    with pytest.raises(ValueError, match="X must be 2-D"):
        gather_windows(np.zeros(10), np.array([5]), 4)
    with pytest.raises(ValueError, match="length must be >= 1 bar, got 0"):
        window_ends(_grid([0, 1]), 0, TF)
    with pytest.raises(ValueError, match="timestamps must be integer ms"):
        window_ends(np.array([0.0, 1.0]), 1, TF)
    assert gather_windows(X, np.array([], dtype=np.int64), 4).shape == (0, 4, 2)
