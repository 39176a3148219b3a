"""OHLCV schema and validation: every source's bars pass through ``validate_ohlcv``.

Bad bars are rejected with a count per reason, never silently dropped or repaired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

OHLCV_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "timestamp": pl.Int64(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "source": pl.String(),
}
RAW_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")

# Order matters: a bar is counted once, under the first reason it fails.
REJECT_REASONS = (
    "nan",
    "off_grid",
    "open_bar",
    "non_positive_price",
    "high_below_open_close",
    "low_above_open_close",
    "negative_volume",
    "duplicate_timestamp",
)


class SchemaError(ValueError):
    """A frame does not have the columns or types a step expects."""


@dataclass(frozen=True)
class ValidationResult:
    """Clean bars in ``OHLCV_SCHEMA`` (sorted, unique timestamps) and per-reason reject counts."""

    bars: pl.DataFrame
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


def empty_ohlcv() -> pl.DataFrame:
    return pl.DataFrame(schema=OHLCV_SCHEMA)


def validate_ohlcv(
    raw: pl.DataFrame,
    *,
    symbol: str,
    source: str,
    tf_ms: int,
    last_closed_ms: int | None = None,
) -> ValidationResult:
    """Validate raw bars (``timestamp`` ms open time, ``open, high, low, close, volume``).

    Rejected, with a count per reason: NaN/null in any field, timestamps off the ``tf_ms`` grid,
    bars not yet closed (``timestamp > last_closed_ms``), non-positive prices,
    ``high < max(open, close)``, ``low > min(open, close)``, negative volume, and repeated
    timestamps (the first occurrence is kept). Returns bars sorted by timestamp with the
    ``symbol`` and ``source`` columns set.
    """
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise SchemaError(f"OHLCV frame for {symbol} lacks columns {missing}; got {raw.columns}")
    if tf_ms <= 0:
        raise ValueError(f"tf_ms must be positive, got {tf_ms}")
    df = _numeric(raw, symbol).with_columns(_reason=_reject_reason(tf_ms, last_closed_ms))
    df = df.with_row_index("_row")
    ok = df.filter(pl.col("_reason").is_null())
    dup = ok.select(pl.col("timestamp").is_duplicated() & ~pl.col("timestamp").is_first_distinct())
    n_dup = int(dup.to_series().sum())
    ok = ok.filter(~dup.to_series())

    counts = dict(df.filter(pl.col("_reason").is_not_null()).group_by("_reason").len().iter_rows())
    rejected = {r: int(counts.get(r, 0)) for r in REJECT_REASONS if r != "duplicate_timestamp"}
    rejected["duplicate_timestamp"] = n_dup
    bars = ok.sort("timestamp").select(
        pl.lit(symbol, dtype=pl.String).alias("symbol"),
        "timestamp",
        *RAW_COLUMNS[1:],
        pl.lit(source, dtype=pl.String).alias("source"),
    )
    return ValidationResult(bars=bars, rejected={k: v for k, v in rejected.items() if v})


def _numeric(raw: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """``RAW_COLUMNS`` of ``raw``: ``timestamp`` as Int64, the rest as Float64; ``SchemaError``
    when a value cannot be cast."""
    try:
        return raw.select(
            pl.col("timestamp").cast(pl.Int64),
            *(pl.col(c).cast(pl.Float64) for c in RAW_COLUMNS[1:]),
        )
    except pl.exceptions.InvalidOperationError as exc:
        raise SchemaError(f"OHLCV frame for {symbol} has non-numeric values: {exc}") from None


def _reject_reason(tf_ms: int, last_closed_ms: int | None) -> pl.Expr:
    """Per bar, the first of ``REJECT_REASONS`` it fails (a null check counts as failed), or
    null for a good bar; ``duplicate_timestamp`` is found afterwards, among the good bars."""
    values = [pl.col(c) for c in RAW_COLUMNS[1:]]
    checks = {
        "nan": pl.col("timestamp").is_null()
        | pl.any_horizontal(*(v.is_null() | v.is_nan() | v.is_infinite() for v in values)),
        "off_grid": (pl.col("timestamp") % tf_ms) != 0,
        "open_bar": (
            pl.col("timestamp") > last_closed_ms if last_closed_ms is not None else pl.lit(False)
        ),
        "non_positive_price": pl.any_horizontal(*(pl.col(c) <= 0 for c in PRICE_COLUMNS)),
        "high_below_open_close": pl.col("high") < pl.max_horizontal("open", "close"),
        "low_above_open_close": pl.col("low") > pl.min_horizontal("open", "close"),
        "negative_volume": pl.col("volume") < 0,
    }
    reason = pl.lit(None, dtype=pl.String)
    for name, cond in reversed(list(checks.items())):
        reason = pl.when(cond.fill_null(True)).then(pl.lit(name)).otherwise(reason)
    return reason


def count_gaps(timestamps: pl.Series, tf_ms: int) -> tuple[int, int]:
    """``(gaps, missing_bars)`` in a sorted, unique timestamp series on the ``tf_ms`` grid.

    A gap is a run of consecutive missing bars; ``missing_bars`` counts the bars in all gaps.
    """
    if timestamps.len() < 2:
        return 0, 0
    step = timestamps.diff().drop_nulls()
    holes = step.filter(step > tf_ms)
    return int(holes.len()), int(((holes // tf_ms) - 1).sum())


def non_finite_counts(df: pl.DataFrame, columns: Sequence[str]) -> dict[str, int]:
    """Per column of ``columns`` in ``df``, how many values are null, NaN or infinite; only the
    columns with at least one are listed (``{}`` when every value is finite)."""
    counts = df.select(
        (pl.col(c).is_null() | pl.col(c).is_nan() | pl.col(c).is_infinite()).sum() for c in columns
    ).row(0, named=True)
    return {c: int(n) for c, n in counts.items() if n}
