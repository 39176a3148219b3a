"""Feature drift: Population Stability Index (PSI) of recent feature values against a reference.

PSI = sum_i (c_i - r_i) * ln(c_i / r_i) over bins, where ``r_i`` and ``c_i`` are the shares of the
reference and the current sample in bin ``i``. Every term is >= 0 (``c_i - r_i`` and
``ln(c_i / r_i)`` share their sign), so PSI >= 0, and 0 when the binned shares agree.
Rule of thumb (Siddiqi 2006, *Credit Risk Scorecards*, Wiley, ch. 8; Yurdakul 2018, "Statistical
properties of population stability index"): < 0.1 no significant shift, 0.1-0.25 moderate shift
(warn), > 0.25 significant shift (error). The thresholds are settings (LEVIBOT_PSI_WARN/ERROR).

The textbook levels alone are red nearly all the time on market features: a slow feature (the
distance from a 200-bar EMA, 20-bar volatility) over one week never looks like months of history.
So a feature's level also weighs its in-training spread ``psi_in_training`` (the largest PSI of
any same-length window inside the reference), and :func:`drift_level` is the one rule that the
``feature_drift`` check (its severity) and the kill-switch (its drift trigger) both use:

    ok     psi <= warn, or psi <= SPREAD_MARGIN * psi_in_training (within the spread)
    error  psi > error and psi > SPREAD_MARGIN * psi_in_training (a shock)
    warn   otherwise; also the most an unknown spread (NaN, a short reference) can give

``SPREAD_MARGIN`` = 1.5 because the spread is the largest of a few dozen windows and there are
30 (symbol, feature) pairs: at margin 1 some pair strays just past its spread on ordinary weeks.
Measured with a 20,000-bar reference and 672-bar window: synthetic market, 33 dates: margin 1
gave 1 ERROR and 3 WARN dates, 1.5 the ERROR only (a switch to the turbulent regime, ``ret_1``
1.7x its spread); ``../shared/data``, 10 dates: 1 ERROR at both (the volatility shock, ``range``
and ``vol_20`` 2.2-2.5x their spread).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import check_array, check_columns

LEVELS: tuple[str, ...] = ("ok", "warn", "error")
SPREAD_MARGIN = 1.5  # a recent PSI counts as beyond training above 1.5 x psi_in_training
REPORT_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "feature": pl.String(),
    "psi": pl.Float64(),
    "n_reference": pl.Int64(),
    "n_current": pl.Int64(),
    "level": pl.String(),
    "psi_in_training": pl.Float64(),
    "beyond_training": pl.Boolean(),
}


def _sample(x: object, name: str) -> np.ndarray:
    """``x`` as a 1-D float64 array with NaNs dropped; ``ValueError`` when not 1-D, when it holds
    an infinity, or when nothing is left."""
    arr = np.asarray(x, dtype=np.float64)
    arr = check_array(arr[~np.isnan(arr)] if arr.ndim == 1 else arr, name, allow_empty=True)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (or all NaN): PSI needs at least one value")
    return arr


def psi(reference: object, current: object, n_bins: int = 10, eps: float = 1e-4) -> float:
    """Population Stability Index of ``current`` against ``reference``.

    Args:
        reference: 1-D sample the bins are taken from (e.g. a feature over the model's training
            window), shape (n_ref,).
        current: 1-D sample compared with it (e.g. the newest bars), shape (n_cur,).
        n_bins: number of quantile bins of the reference (default 10, deciles). Inner edges are
            the unique reference quantiles at ``k / n_bins``; the outer edges are -inf/+inf, so
            current values beyond the reference range land in the first/last bin. A value equal
            to an edge belongs to the lower bin. Ties in the reference merge bins.
        eps: floor on each bin share (default 1e-4) so an empty bin gives a large finite term
            instead of ln(0). Shares are floored and NOT renormalized: every term stays >= 0 and
            the floor adds at most about ``eps * ln(1 / eps)`` per empty bin.

    NaNs are dropped from both samples first (each sample must keep at least one value);
    infinities raise ``ValueError``. A constant reference ``v`` uses the three bins
    ``< v``, ``== v``, ``> v``: PSI 0 when ``current`` is all ``v``, about
    ``2 * ln(1 / eps)`` (18.4 at the default) when none of it is.

    Returns:
        PSI >= 0 as a float.
    """
    ref = _sample(reference, "reference")
    cur = _sample(current, "current")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise ValueError(f"n_bins={n_bins!r}: expected an integer >= 2")
    if not 0.0 < eps < 1.0 / n_bins:
        raise ValueError(f"eps={eps!r}: expected a number in (0, 1/n_bins = {1.0 / n_bins})")
    assign, k = _binning(ref, n_bins)
    r = np.bincount(assign(ref), minlength=k) / ref.size
    c = np.bincount(assign(cur), minlength=k) / cur.size
    return float(_psi_of_shares(r, c, eps))


def _binning(ref: np.ndarray, n_bins: int) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """``(assign, k)``: the bin index (0 .. k-1) of each value, for bins of the reference
    ``ref`` (finite, non-empty) as :func:`psi` describes them."""
    lo, hi = ref.min(), ref.max()
    if lo == hi:
        return (lambda x: np.where(x < lo, 0, np.where(x == lo, 1, 2))), 3
    edges = np.unique(np.quantile(ref, np.arange(1, n_bins) / n_bins))
    return (lambda x: np.searchsorted(edges, x, side="left")), edges.size + 1


def _psi_of_shares(r: np.ndarray, c: np.ndarray, eps: float) -> np.ndarray:
    """PSI of bin shares ``c`` (shape (k,) or (w, k)) against ``r`` (k,), shares floored at
    ``eps``; one value per row of ``c``."""
    r, c = np.maximum(r, eps), np.maximum(c, eps)
    return np.sum((c - r) * np.log(c / r), axis=-1)


def feature_psi(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: Sequence[str],
    *,
    n_bins: int = 10,
    label: str = "",
) -> dict[str, float]:
    """:func:`psi` of each of ``columns``, ``current`` vs ``reference`` (nulls and NaNs
    dropped); errors name the column, prefixed by ``label`` (e.g. the symbol) when given."""
    if not columns:
        raise ValueError("columns is empty: expected at least one feature column")
    check_columns("reference", reference.columns, columns, "feature columns")
    check_columns("current", current.columns, columns, "feature columns")
    prefix = f"{label} " if label else ""
    out = {}
    for c in columns:
        ref = _sample(
            reference.get_column(c).cast(pl.Float64).fill_null(np.nan), f"{prefix}reference {c}"
        )
        cur = _sample(
            current.get_column(c).cast(pl.Float64).fill_null(np.nan), f"{prefix}current {c}"
        )
        out[c] = psi(ref, cur, n_bins)
    return out


def psi_level(value: float, warn: float, error: float) -> str:
    """``"ok"`` when ``value <= warn``, ``"warn"`` when ``value <= error``, else ``"error"``."""
    if not 0.0 <= warn <= error:
        raise ValueError(f"warn={warn!r}, error={error!r}: expected 0 <= warn <= error")
    if not value >= 0.0:
        raise ValueError(f"psi={value!r}: expected a number >= 0")
    return "error" if value > error else "warn" if value > warn else "ok"


def beyond_spread(value: float, psi_in_training: float, margin: float = SPREAD_MARGIN) -> bool:
    """``value > margin * psi_in_training``: a recent PSI stranger than every same-length window
    in training, by the margin (default 1.5); False when the spread is unknown (NaN)."""
    if not margin >= 1.0:
        raise ValueError(f"margin={margin!r}: expected a number >= 1")
    return bool(value > margin * psi_in_training)


def drift_level(
    value: float, psi_in_training: float, warn: float, error: float, margin: float = SPREAD_MARGIN
) -> str:
    """The drift rule (module docstring) for one feature: its textbook :func:`psi_level`, but
    ``"ok"`` within ``margin * psi_in_training`` and at most ``"warn"`` when the spread is
    unknown (NaN). ``"error"`` only for ``value > error`` and beyond the spread. The
    ``feature_drift`` check's severity and the kill-switch's drift trigger both come from it."""
    level = psi_level(value, warn, error)
    if math.isnan(psi_in_training):
        return "warn" if level == "error" else level
    if not psi_in_training >= 0.0:
        raise ValueError(f"psi_in_training={psi_in_training!r}: expected a number >= 0 or NaN")
    return level if beyond_spread(value, psi_in_training, margin) else "ok"


def drift_report(
    features: pl.DataFrame,
    symbol_windows: Mapping[str, tuple[int, int]],
    recent_bars: int,
    columns: Sequence[str],
    warn: float,
    error: float,
    margin: float = SPREAD_MARGIN,
) -> pl.DataFrame:
    """PSI of each feature per symbol: the newest bars against the model's training window.

    Args:
        features: long feature table with ``symbol``, ``timestamp`` (bar open, ms UTC) and
            ``columns``.
        symbol_windows: symbol -> ``(start_ms, end_ms)``, inclusive bar-open bounds of the
            reference (the champion model's training window).
        recent_bars: the current sample is the symbol's newest ``recent_bars`` rows, minus any
            that fall inside its reference window (a row is never compared with itself), so it
            can hold fewer rows; ``n_current`` says how many.
        columns: feature columns to compare.
        warn, error: PSI thresholds of the textbook levels (see :func:`psi_level`).
        margin: how far beyond its in-training spread a PSI must be (:func:`beyond_spread`,
            default 1.5).

    Returns:
        One row per (symbol, feature) in ``symbol_windows`` order then ``columns`` order, with
        :data:`REPORT_SCHEMA`: symbol, feature, psi, n_reference, n_current, ``level`` (from
        :func:`drift_level`), ``psi_in_training`` (the largest PSI of any ``n_current``-bar
        window *inside* the reference, starting every ``n_current // 4`` bars, against the whole
        reference: how far a window of that length strays with no drift at all; NaN when the
        reference is shorter than two windows) and ``beyond_training`` (``psi`` above
        ``margin`` times it).
        Slow features (a 200-bar EMA distance, 20-bar volatility) over a one-week window often
        exceed the textbook 0.25 against months of history without anything having changed:
        they stay ``"ok"`` while no stranger than the windows the model was trained on. Raises
        ``ValueError`` naming the symbol when its reference or current sample is empty.
    """
    if isinstance(recent_bars, bool) or not isinstance(recent_bars, int) or recent_bars < 1:
        raise ValueError(f"recent_bars={recent_bars!r}: expected an integer >= 1")
    if not symbol_windows:
        raise ValueError("symbol_windows is empty: expected at least one symbol")
    psi_level(0.0, warn, error)
    beyond_spread(0.0, 0.0, margin)
    check_columns(
        "features", features.columns, ["symbol", "timestamp", *columns], "feature columns"
    )
    rows = []
    for symbol, window in symbol_windows.items():
        reference, current = _samples(features, symbol, window, recent_bars)
        m = current.height
        for feature, value in feature_psi(reference, current, columns, label=symbol).items():
            null = _psi_in_training(reference.get_column(feature).to_numpy(), m)
            level = drift_level(value, null, warn, error, margin)
            beyond = beyond_spread(value, null, margin)
            rows.append((symbol, feature, value, reference.height, m, level, null, beyond))
    return pl.DataFrame(rows, schema=REPORT_SCHEMA, orient="row")


def _samples(
    features: pl.DataFrame, symbol: str, window: tuple[int, int], recent_bars: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(reference, current)`` rows of ``symbol``: those inside the inclusive bar-open window
    ``(start_ms, end_ms)``, and its newest ``recent_bars`` rows outside it; ``ValueError``
    naming the symbol when either is empty."""
    start, end = window
    if start > end:
        raise ValueError(f"{symbol}: reference window start {start} > end {end}")
    own = features.filter(pl.col("symbol") == symbol).sort("timestamp")
    if own.height == 0:
        raise ValueError(
            f"{symbol}: no rows in features (symbols: {features['symbol'].unique().to_list()})"
        )
    inside = pl.col("timestamp").is_between(start, end)
    reference = own.filter(inside)
    current = own.tail(recent_bars).filter(~inside)
    if reference.height == 0 or current.height == 0:
        raise ValueError(
            f"{symbol}: {reference.height} reference rows in [{start}, {end}] and "
            f"{current.height} current rows among the newest {recent_bars} outside it; "
            "expected both > 0"
        )
    return reference, current


def _psi_in_training(reference: np.ndarray, m: int, n_bins: int = 10, eps: float = 1e-4) -> float:
    """The largest :func:`psi` against the whole of ``reference`` (shape (n,), in time order,
    NaNs dropped) of any ``m``-row window of it starting at a multiple of ``m // 4`` (windows
    overlap by three quarters, so the strangest stretch is not split between two): how far a
    window of ``m`` rows strays with no drift at all. NaN when ``n < 2 * m``. Window counts come
    from cumulative bin counts, one pass over the reference."""
    if reference.size < 2 * m:
        return float("nan")
    valid = ~np.isnan(reference)
    ref = reference[valid]
    assign, k = _binning(ref, n_bins)
    r = np.bincount(assign(ref), minlength=k) / ref.size
    onehot = np.zeros((reference.size, k))
    onehot[np.flatnonzero(valid), assign(ref)] = 1.0
    cum = np.vstack([np.zeros((1, k)), np.cumsum(onehot, axis=0)])
    starts = np.arange(0, reference.size - m + 1, max(m // 4, 1))
    counts = cum[starts + m] - cum[starts]
    size = counts.sum(axis=1)
    shares = counts[size > 0] / size[size > 0, None]
    return float(np.max(_psi_of_shares(r, shares, eps)))


def max_level(report: pl.DataFrame) -> str:
    """The worst ``level`` of a :func:`drift_report` (``"ok"`` when it has no rows)."""
    check_columns("report", report.columns, ["level"])
    levels = report.get_column("level").unique().to_list()
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise ValueError(f"report has levels {unknown}, expected only {LEVELS}")
    return max(levels, key=LEVELS.index, default="ok")


def drift_alarm(report: pl.DataFrame) -> dict | None:
    """The row the kill-switch acts on: the largest PSI among features at level ``error`` (which
    :func:`drift_level` gives only beyond the in-training spread, so the check is at ERROR
    exactly when there is an alarm); ``None`` when there is none."""
    check_columns("report", report.columns, ["psi", "level", "beyond_training"])
    alarming = report.filter((pl.col("level") == "error") & pl.col("beyond_training"))
    if alarming.is_empty():
        return None
    return alarming.sort("psi", descending=True).row(0, named=True)
