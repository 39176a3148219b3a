"""The wide frame under the feature table: one row per timestamp common to all symbols.

Two ways to the same frame. When ``bars`` holds every symbol as one contiguous run of rows with
the same strictly increasing timestamps (the store's layout: one file per symbol, concatenated),
the per-symbol columns are zero-copy slices of ``bars`` placed side by side. Otherwise every
symbol's rows are inner-joined on ``timestamp`` and sorted. Both give the rows and values that
the join gives; the first copies no bar.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl


def common_grid(
    bars: pl.DataFrame,
    symbols: list[str],
    columns: dict[str, pl.Expr],
    *,
    tf_ms: int,
    horizon: int,
) -> pl.DataFrame:
    """One row per timestamp common to all ``symbols``, sorted by ``timestamp``.

    Args:
        bars: long bars with ``symbol``, ``timestamp`` (unique per symbol) and the columns that
            ``columns`` reads; ``symbols`` the sorted symbols present in it.
        columns: ``name -> expression`` over one symbol's own bars, row by row (no window),
            e.g. ``{"close": pl.col("close")}``.
        tf_ms: bar length in ms; a step other than ``tf_ms`` between rows starts a new segment.
        horizon: label horizon in bars, for ``_same_seg_ahead``.

    Returns:
        ``timestamp``, then ``{name}_{sym}`` for every symbol and name, the gap-free segment id
        ``seg`` (UInt32, 0 from the first row, +1 at every gap), the row's index ``_row``
        inside its segment (UInt32) and ``_same_seg_ahead`` (row ``t + horizon`` is in the same
        segment, so a label does not span a gap; null on the last ``horizon`` rows).
    """

    def renamed(sym: str) -> list[pl.Expr]:
        return [e.alias(f"{name}_{sym}") for name, e in columns.items()]

    parts = _aligned_runs(bars, symbols)
    if parts is None:
        wide = _joined(bars, symbols, renamed)
    else:
        wide = pl.concat(
            [
                part.select(*(["timestamp"] if i == 0 else []), *renamed(sym))
                for i, (sym, part) in enumerate(zip(symbols, parts, strict=True))
            ],
            how="horizontal",
        )
    seg = (pl.col("timestamp").diff().fill_null(tf_ms) != tf_ms).cum_sum().cast(pl.UInt32)
    wide = wide.with_columns(seg=seg)
    idx = pl.int_range(pl.len(), dtype=pl.UInt32)
    if wide.get_column("seg").max() in (None, 0):
        row = idx
    else:
        starts = pl.col("seg") != pl.col("seg").shift(1).fill_null(pl.col("seg") + 1)
        row = idx - pl.when(starts).then(idx).otherwise(None).forward_fill()
    return wide.with_columns(
        _row=row, _same_seg_ahead=pl.col("seg").shift(-horizon) == pl.col("seg")
    )


def _aligned_runs(bars: pl.DataFrame, symbols: list[str]) -> list[pl.DataFrame] | None:
    """Zero-copy slices of ``bars``, one per symbol in ``symbols`` order, when every symbol is
    one contiguous run of rows and all runs have the same strictly increasing integer
    timestamps; None otherwise."""
    runs = bars.get_column("symbol").rle()
    if runs.len() != len(symbols):
        return None
    offset, parts = 0, {}
    for length, sym in zip(
        runs.struct.field("len").to_list(), runs.struct.field("value").to_list(), strict=True
    ):
        parts[sym] = bars.slice(offset, length)
        offset += length
    first = parts[symbols[0]].get_column("timestamp")
    if not first.dtype.is_integer() or first.null_count() or not _strictly_increasing(first):
        return None
    if any(not parts[s].get_column("timestamp").equals(first) for s in symbols[1:]):
        return None
    return [parts[s] for s in symbols]


def _strictly_increasing(ts: pl.Series) -> bool:
    return ts.len() < 2 or bool(ts.diff().min() > 0)


def _joined(
    bars: pl.DataFrame, symbols: list[str], renamed: Callable[[str], list[pl.Expr]]
) -> pl.DataFrame:
    per_symbol = [
        bars.filter(pl.col("symbol") == sym).select("timestamp", *renamed(sym)) for sym in symbols
    ]
    wide = per_symbol[0]
    for one in per_symbol[1:]:
        wide = wide.join(one, on="timestamp", how="inner")
    return wide.sort("timestamp")
