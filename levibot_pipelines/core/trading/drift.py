"""Feature drift: Population Stability Index (PSI) of recent feature values against a reference.

PSI = sum_i (c_i - r_i) * ln(c_i / r_i) over bins, where ``r_i`` and ``c_i`` are the shares of the
reference and the current sample in bin ``i``. Every term is >= 0 (``c_i - r_i`` and
``ln(c_i / r_i)`` share their sign), so PSI >= 0, and 0 when the binned shares agree.
Rule of thumb (Siddiqi 2006, *Credit Risk Scorecards*, Wiley, ch. 8; Yurdakul 2018, "Statistical
properties of population stability index"): < 0.1 no significant shift, 0.1-0.25 moderate shift
(warn), > 0.25 significant shift (error). The thresholds are settings (LEVIBOT_PSI_WARN/ERROR).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import check_array, check_columns

LEVELS: tuple[str, ...] = ("ok", "warn", "error")
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
    lo, hi = ref.min(), ref.max()
    if lo == hi:
        r = np.array([0.0, 1.0, 0.0])
        c = np.array([(cur < lo).mean(), (cur == lo).mean(), (cur > lo).mean()])
    else:
        edges = np.unique(np.quantile(ref, np.arange(1, n_bins) / n_bins))
        k = edges.size + 1
        r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=k) / ref.size
        c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=k) / cur.size
    r, c = np.maximum(r, eps), np.maximum(c, eps)
    return float(np.sum((c - r) * np.log(c / r)))


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


def drift_report(
    features: pl.DataFrame,
    symbol_windows: Mapping[str, tuple[int, int]],
    recent_bars: int,
    columns: Sequence[str],
    warn: float,
    error: float,
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
        warn, error: PSI thresholds for the levels (see :func:`psi_level`).

    Returns:
        One row per (symbol, feature) in ``symbol_windows`` order then ``columns`` order, with
        :data:`REPORT_SCHEMA`: symbol, feature, psi, n_reference, n_current, level,
        ``psi_in_training`` (the largest PSI of any non-overlapping ``n_current``-bar window
        *inside* the reference against the whole reference: how far a window of that length
        strays with no drift at all; NaN when the reference holds fewer than two such windows)
        and ``beyond_training`` (``psi`` above it). Slow features (a 200-bar EMA distance, 20-bar
        volatility) over a one-week window often exceed the textbook 0.25 against months of
        history without anything having changed; ``beyond_training`` says the recent window is
        more unusual than every window the model was trained on. Raises ``ValueError`` naming
        the symbol when its reference or current sample is empty.
    """
    if isinstance(recent_bars, bool) or not isinstance(recent_bars, int) or recent_bars < 1:
        raise ValueError(f"recent_bars={recent_bars!r}: expected an integer >= 1")
    if not symbol_windows:
        raise ValueError("symbol_windows is empty: expected at least one symbol")
    psi_level(0.0, warn, error)
    check_columns(
        "features", features.columns, ["symbol", "timestamp", *columns], "feature columns"
    )
    rows = []
    for symbol, window in symbol_windows.items():
        reference, current = _samples(features, symbol, window, recent_bars)
        m = current.height
        for feature, value in feature_psi(reference, current, columns, label=symbol).items():
            level = psi_level(value, warn, error)
            null = _psi_in_training(reference.get_column(feature).to_numpy(), m)
            beyond = bool(value > null) if null == null else False
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


def _psi_in_training(reference: np.ndarray, m: int) -> float:
    """The largest :func:`psi` of any non-overlapping ``m``-row window of ``reference`` (shape
    (n,), in time order) against the whole of it: how far a window of ``m`` rows strays with
    no drift at all. NaN when ``reference`` holds fewer than two such windows."""
    windows = [reference[i : i + m] for i in range(0, len(reference) - m + 1, m)]
    null = max((psi(reference, w) for w in windows), default=float("nan"))
    return null if len(windows) >= 2 else float("nan")


def max_level(report: pl.DataFrame) -> str:
    """The worst ``level`` of a :func:`drift_report` (``"ok"`` when it has no rows)."""
    check_columns("report", report.columns, ["level"])
    levels = report.get_column("level").unique().to_list()
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise ValueError(f"report has levels {unknown}, expected only {LEVELS}")
    return max(levels, key=LEVELS.index, default="ok")


def drift_alarm(report: pl.DataFrame) -> dict | None:
    """The row the kill-switch acts on: the largest PSI among features at level ``error`` that
    are also ``beyond_training``; ``None`` when there is none (ERROR alone is not enough, see
    :func:`drift_report`)."""
    check_columns("report", report.columns, ["psi", "level", "beyond_training"])
    alarming = report.filter((pl.col("level") == "error") & pl.col("beyond_training"))
    if alarming.is_empty():
        return None
    return alarming.sort("psi", descending=True).row(0, named=True)
