"""The one windowing function shared by training, evaluation and live prediction.

A window of ``length`` bars *ending at row i* is ``X[i - length + 1 : i + 1]``: the bar at row
``i`` and the ``length - 1`` bars before it, oldest first. Row ``i`` holds features known at the
close of bar ``i``, so the window is known at that close, and the label paired with it is the
row-``i`` label (``y_up[i]``, ``fwd_ret[i]``: close(i) -> close(i + h)), which is never inside
the window. A window never spans a gap in the bar grid: ``window_ends`` only returns rows whose
``length`` bars are consecutive. Because a window only looks backwards, the window ending at the
newest bar is the same whether the array stops there (live) or runs on (backtest).
``covered_rows`` marks the rows inside a set of windows; ``check_training_arrays`` and
``check_training_ends`` validate what a model is trained on (shapes, labels, finite windows).
"""

from __future__ import annotations

import numpy as np

from levibot_pipelines.core.checks import check_int_array


def window_ends(timestamps: np.ndarray, length: int, tf_ms: int) -> np.ndarray:
    """Rows at which a gap-free window of ``length`` bars ends.

    Args:
        timestamps: ``(n,)`` int64 bar open times in ms, one symbol, in row order.
        length: bars per window (>= 1).
        tf_ms: bar length in ms (> 0).

    Returns:
        ``(m,)`` int64 row indices ``i``, ascending, such that rows ``i - length + 1 .. i`` are
        consecutive bars on the grid: every step ``timestamps[j] - timestamps[j - 1]`` inside the
        window equals ``tf_ms``. Unsorted or duplicate rows therefore break windows like a gap
        does. Rows with fewer than ``length - 1`` predecessors are never ends.
    """
    ts = np.asarray(timestamps)
    if ts.ndim != 1:
        raise ValueError(f"timestamps must be 1-D, got shape {ts.shape}")
    if not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"timestamps must be integer ms, got dtype {ts.dtype}")
    if length < 1:
        raise ValueError(f"length must be >= 1 bar, got {length}")
    if tf_ms <= 0:
        raise ValueError(f"tf_ms must be > 0, got {tf_ms}")
    n = ts.shape[0]
    if n < length:
        return np.empty(0, dtype=np.int64)
    step_ok = np.diff(ts.astype(np.int64)) == tf_ms  # (n-1,): row j+1 follows row j on the grid
    # good[k] = number of on-grid steps among rows 0..k; the window ending at i needs all
    # length - 1 steps between rows i - length + 1 and i to be on the grid.
    good = np.concatenate(([0], np.cumsum(step_ok, dtype=np.int64)))  # (n,)
    ends = np.arange(length - 1, n, dtype=np.int64)
    full = good[ends] - good[ends - (length - 1)] == length - 1
    return ends[full]


def gather_windows(X: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Stack the windows ending at ``ends``.

    Args:
        X: ``(n, F)`` feature rows (float32 expected; the dtype is kept).
        ends: ``(B,)`` integer row indices, each in ``[length - 1, n - 1]``.
        length: bars per window (>= 1).

    Returns:
        ``(B, length, F)`` array; ``out[b] == X[ends[b] - length + 1 : ends[b] + 1]`` (a copy).
    """
    X = np.asarray(X)
    ends = np.asarray(ends)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, F), got shape {X.shape}")
    if ends.ndim != 1:
        raise ValueError(f"ends must be 1-D, got shape {ends.shape}")
    if ends.size and not np.issubdtype(ends.dtype, np.integer):
        raise ValueError(f"ends must be integer row indices, got dtype {ends.dtype}")
    if length < 1:
        raise ValueError(f"length must be >= 1 bar, got {length}")
    if ends.size:
        lo, hi = int(ends.min()), int(ends.max())
        if lo < length - 1:
            raise ValueError(
                f"window end {lo} < length - 1 = {length - 1}: it would start before row 0"
            )
        if hi >= X.shape[0]:
            raise ValueError(f"window end {hi} is past the last row {X.shape[0] - 1}")
    offsets = np.arange(1 - length, 1, dtype=np.int64)  # (length,), oldest bar first
    rows = ends.astype(np.int64)[:, None] + offsets[None, :]  # (B,) -> (B, length)
    return X[rows]  # (B, length) row indices -> (B, length, F)


def covered_rows(n: int, ends: np.ndarray, length: int) -> np.ndarray:
    """``(n,)`` bool mask of rows inside at least one window of ``length`` ending at ``ends``."""
    ends = np.asarray(ends, dtype=np.int64)
    # +1 where a window starts, -1 after it ends; a running sum > 0 marks covered rows.
    delta = np.bincount(ends - length + 1, minlength=n + 1) - np.bincount(ends + 1, minlength=n + 1)
    return np.cumsum(delta)[:n] > 0  # (n + 1,) -> (n,)


def labeled_ends(ends: np.ndarray, *labels: np.ndarray) -> np.ndarray:
    """Keep the ends whose labels are all known (finite; nulls arrive as NaN).

    The newest rows have no label yet (``y_up``/``fwd_ret`` null): they are windows for live
    prediction but not for training or scoring. ``labels`` are ``(n,)`` arrays indexed by row.
    """
    ends = np.asarray(ends, dtype=np.int64)
    keep = np.ones(ends.shape[0], dtype=bool)
    for y in labels:
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"labels must be 1-D (n,), got shape {y.shape}")
        if ends.size and int(ends.max()) >= y.shape[0]:
            raise ValueError(
                f"window end {int(ends.max())} is past the last label {y.shape[0] - 1}"
            )
        keep &= np.isfinite(y[ends])
    return ends[keep]


def check_training_arrays(
    X: np.ndarray, y_up: np.ndarray, fwd_ret: np.ndarray, n_features: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X`` as float32 ``(n, n_features)`` and the labels ``y_up`` / ``fwd_ret`` as float64
    ``(n,)``, else ``ValueError`` naming the bad shape."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"X must have shape (n, {n_features}), got {X.shape}")
    y_up, fwd_ret = np.asarray(y_up, np.float64), np.asarray(fwd_ret, np.float64)
    for name, arr in (("y_up", y_up), ("fwd_ret", fwd_ret)):
        if arr.shape != (X.shape[0],):
            raise ValueError(f"{name} must have shape ({X.shape[0]},), got {arr.shape}")
    return X, y_up, fwd_ret


def check_training_ends(
    ends: np.ndarray,
    name: str,
    X: np.ndarray,
    y_up: np.ndarray,
    fwd_ret: np.ndarray,
    length: int,
) -> np.ndarray:
    """``ends`` (named ``name`` in errors) as int64 when every window of ``length`` rows ending
    there lies inside ``X`` ``(n, F)`` and holds only finite values, and every end is labeled
    (``y_up`` 0/1, ``fwd_ret`` finite); else ``ValueError`` with the counts."""
    ends = check_int_array(ends, name)
    if ends.min() < length - 1 or ends.max() >= X.shape[0]:
        raise ValueError(
            f"{name} must lie in [{length - 1}, {X.shape[0] - 1}] "
            f"(window={length}), got [{ends.min()}, {ends.max()}]"
        )
    bad_y = int(np.sum(~np.isin(y_up[ends], (0.0, 1.0))))
    bad_r = int(np.sum(~np.isfinite(fwd_ret[ends])))
    if bad_y or bad_r:
        raise ValueError(
            f"{name}: y_up is not 0/1 at {bad_y} ends and fwd_ret is not finite at {bad_r} ends; "
            "drop unlabeled rows with windows.labeled_ends"
        )
    bad_x = int(np.sum(~np.isfinite(X[covered_rows(X.shape[0], ends, length)])))
    if bad_x:
        raise ValueError(f"{name}: X has {bad_x} non-finite values inside the windows")
    return ends
