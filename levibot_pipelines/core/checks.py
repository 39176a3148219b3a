"""Input checks shared by the core: each returns the checked value or raises ``ValueError``
naming the bad value and what was expected. Pure: needs numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def check_array(x: object, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a 1-D float64 array without NaN or infinity, non-empty unless ``allow_empty``,
    else ``ValueError``."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or (arr.size == 0 and not allow_empty):
        what = "a 1-D array" if allow_empty else "a non-empty 1-D array"
        raise ValueError(f"{name} must be {what}, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must be finite, got {arr[i]} at index {i}")
    return arr


def check_range(
    x: object, name: str, lo: float, hi: float, *, nan_ok: bool = False, open_lo: bool = False
) -> np.ndarray:
    """``x`` as float64 (any shape) with every value in ``[lo, hi]`` (``(lo, hi]`` when
    ``open_lo``; NaN allowed when ``nan_ok``), else ``ValueError`` naming the first bad value."""
    a = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(a) & ((a > lo) if open_lo else (a >= lo)) & (a <= hi)
    bad = ~(ok | np.isnan(a)) if nan_ok else ~ok
    if bad.any():
        i = int(np.argmax(bad.ravel()))
        where = f" at index {i}" if a.ndim else ""
        span = f"in {'(' if open_lo else '['}{lo}, {hi}]" if math.isfinite(lo) else ""
        span = f"finite {span}".rstrip() + (" or NaN" if nan_ok else "")
        raise ValueError(f"{name} must be {span}, got {a.ravel()[i]}{where}")
    return a


def check_int_array(x: object, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a 1-D int64 array (e.g. ms UTC timestamps or row indices), non-empty unless
    ``allow_empty``; a float or multi-dimensional array is a ``ValueError``."""
    arr = np.asarray(x)
    if arr.ndim != 1 or (arr.size == 0 and not allow_empty) or arr.dtype.kind not in "iu":
        what = "a 1-D integer array" if allow_empty else "a non-empty 1-D integer array"
        raise ValueError(f"{name} must be {what}, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


def require_all(ok: np.ndarray, what: str, values: np.ndarray) -> None:
    """Raise ``ValueError`` ``"{what}, got {value} at index {i}"`` naming the first index ``i``
    where the boolean array ``ok`` is False (``values``: the array checked, same shape)."""
    if not ok.all():
        i = int(np.argmin(ok))
        raise ValueError(f"{what}, got {values[i]} at index {i}")


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_min(name: str, value: float, minimum: float) -> None:
    """``ValueError`` ``"{name} must be >= {minimum}, got {value}"`` when ``value < minimum``;
    for sizes and counts whose type the signature already states (use ``check_int`` where the
    type itself must be checked)."""
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def check_columns(
    name: str, have: Sequence[str], need: Sequence[str], what: str = "columns"
) -> None:
    """Raise ``ValueError`` listing the ``need`` columns missing from ``have`` (a frame's
    ``columns``), e.g. ``"pred lacks columns ['p_deep']; it has [...]"``."""
    missing = [c for c in need if c not in have]
    if missing:
        raise ValueError(f"{name} lacks {what} {missing}; it has {list(have)}")


def check_same_length(**arrays: np.ndarray) -> None:
    """Raise ``ValueError`` naming every length when the named arrays differ in length:
    ``"length mismatch: y has 3, p has 2"``."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {listed}")


def check_labels(y: object, name: str = "y") -> np.ndarray:
    """``y`` as a float64 array of 0/1 labels, shape (n,), n >= 1."""
    arr = check_array(y, name)
    bad = (arr != 0.0) & (arr != 1.0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must contain only 0 and 1, got {arr[i]} at index {i}")
    return arr


def check_probabilities(p: object, name: str = "p") -> np.ndarray:
    """``p`` as a float64 array of probabilities in [0, 1], shape (n,), n >= 1."""
    arr = check_array(p, name)
    bad = (arr < 0.0) | (arr > 1.0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must be probabilities in [0, 1], got {arr[i]} at index {i}")
    return arr
