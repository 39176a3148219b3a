"""Cross-asset feature table: one row per (symbol, timestamp) on the grid common to all symbols.

Time alignment: every feature at row ``t`` uses bars up to and including the close of ``t`` and
nothing later (all transforms are causal: differences, trailing rolling windows, recursive EMAs).
Labels look forward: ``fwd_ret`` at ``t`` is ``log(close[t + h] / close[t])`` and ``y_up`` is
``fwd_ret > 0``; both are null where ``t + h`` is not known yet, so the newest rows stay
available for live prediction.

Gaps: the common grid is split into segments at every missing bar (missing in any symbol). Every
window restarts in a new segment, and the first ``warmup - 1`` rows of each segment are dropped,
never filled, so a feature never spans a gap.

Features (all scale-free, so the same model serves BTC at 100k and SOL at 100):

- ``ret_1``: one-bar log return, ``log(close[t] / close[t-1])``.
- ``ema_20``, ``ema_50``, ``ema_200``: distance of the close from its exponential moving average,
  ``close / ema_n - 1``; ``ema_n`` is recursive with ``alpha = 2 / (n + 1)``, seeded with the
  segment's first close (pandas ``ewm(span=n, adjust=False)``).
- ``z_20``: ``(close - mean_20) / std_20`` over the trailing 20 closes (sample std, ddof=1);
  0 when the 20 closes are all equal.
- ``range``: bar range relative to the close, ``(high - low) / close``.
- ``vol_20``: sample std (ddof=1) of the trailing 20 ``ret_1`` values.
- ``ratio_BTC_ETH``, ``ratio_ETH_SOL``: deviation of the log price ratio from its 50-bar EMA,
  ``log(A / B) - ema_50(log(A / B))``; the same value on every symbol's row. The raw ratios
  ``A / B`` are kept as ``ratio_btc_eth_raw`` and ``ratio_eth_sol_raw`` for monitoring.
- ``lead_ret_BTC``: BTC's one-bar log return at ``t`` (known at the close of ``t``), on every
  symbol's row; BTC tends to move first, so for ETH and SOL it leads their next return.
"""

from __future__ import annotations

import polars as pl

from levibot_pipelines.core.data.common_grid import common_grid
from levibot_pipelines.core.data.futures import FUTURES_COLUMNS, FuturesData, futures_features
from levibot_pipelines.core.data.validation import SchemaError

FEATURE_COLUMNS: tuple[str, ...] = (
    "ret_1",
    "ema_20",
    "ema_50",
    "ema_200",
    "z_20",
    "range",
    "vol_20",
    "ratio_BTC_ETH",
    "ratio_ETH_SOL",
    "lead_ret_BTC",
)
LABEL_COLUMNS: tuple[str, ...] = ("fwd_ret", "y_up")
CROSS_COLUMNS: tuple[str, ...] = ("ratio_BTC_ETH", "ratio_ETH_SOL", "lead_ret_BTC")
MONITOR_COLUMNS: tuple[str, ...] = ("ratio_btc_eth_raw", "ratio_eth_sol_raw")
WARMUP_BARS = 200
MIN_WARMUP = 21
RATIO_EMA_SPAN = 50
LEAD_SYMBOL = "BTCUSDT"
RATIO_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("BTCUSDT", "ETHUSDT", "BTC_ETH"),
    ("ETHUSDT", "SOLUSDT", "ETH_SOL"),
)
FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "timestamp": pl.Int64(),
    "close": pl.Float64(),
    **{c: pl.Float64() for c in FEATURE_COLUMNS},
    **{c: pl.Float64() for c in MONITOR_COLUMNS},
    "fwd_ret": pl.Float64(),
    "y_up": pl.Int8(),
}


# Each symbol's columns on the common grid: the close and the bar's range ``(high - low) / close``.
_BAR_COLUMNS: dict[str, pl.Expr] = {
    "close": pl.col("close").cast(pl.Float64),
    "range": (pl.col("high").cast(pl.Float64) - pl.col("low").cast(pl.Float64))
    / pl.col("close").cast(pl.Float64),
}


def required_symbols() -> set[str]:
    """Symbols the cross-asset features need besides the traded ones."""
    return {LEAD_SYMBOL} | {s for a, b, _ in RATIO_PAIRS for s in (a, b)}


def build_features(
    bars: pl.DataFrame,
    *,
    tf_ms: int,
    horizon: int,
    warmup: int = WARMUP_BARS,
    futures: FuturesData | None = None,
) -> pl.DataFrame:
    """Build the feature table from validated long-format bars.

    Args:
        bars: columns ``symbol, timestamp, high, low, close`` (ms open times on the ``tf_ms``
            grid, unique per symbol), for at least BTCUSDT, ETHUSDT and SOLUSDT.
        tf_ms: bar length in ms.
        horizon: label horizon ``h`` in bars, >= 1 (no default: the caller passes the
            configured ``LEVIBOT_LABEL_HORIZON``).
        warmup: rows per segment needed before a row is kept (default 200, the longest window;
            at least 21, so that every 20-bar window of returns is full).
        futures: optional funding settlements and mark bars (``core.data.futures``); when
            given, ``FUTURES_COLUMNS`` are appended after ``FEATURE_SCHEMA``'s columns (null
            for symbols or times without futures data). None (default): the table is unchanged.

    Returns:
        ``FEATURE_SCHEMA`` columns sorted by ``symbol, timestamp`` (+ ``FUTURES_COLUMNS``).
        No copy of the wide frame is made: the per-timestamp columns (``timestamp``,
        cross-asset, monitoring) are the same buffers on every symbol's rows, and ``close`` and
        ``timestamp`` are slices of ``bars`` when they are float64 and int64 in the store's
        layout (``core.data.common_grid``).
    """
    symbols = _checked_symbols(bars, horizon, warmup)
    # One buffer per column, so that every column computed below is one chunk and the table is
    # put together from them without a copy.
    wide = common_grid(bars, symbols, _BAR_COLUMNS, tf_ms=tf_ms, horizon=horizon).rechunk()
    segmented = (wide.get_column("seg").max() or 0) > 0

    def kept(expr: pl.Expr) -> pl.Expr:
        """Rows from the warm-up on: a zero-copy slice when the grid has no gap, else a filter
        (the first ``warmup - 1`` rows of every segment go)."""
        return expr.filter(pl.col("_row") >= warmup - 1) if segmented else expr.slice(warmup - 1)

    source = wide.lazy()
    shared, *own = pl.collect_all(
        [
            source.select(
                kept(pl.col("timestamp")),
                *(kept(e.alias(c)) for c, e in _cross_features(segmented).items()),
            ),
            *(
                source.select(
                    *(kept(e) for e in _symbol_features(sym, horizon, segmented))
                ).with_columns(direction_label(pl.col("fwd_ret")))
                for sym in symbols
            ),
        ],
        engine="in-memory",  # the streaming engine returns many small chunks here
    )
    table = pl.concat(
        [_symbol_rows(sym, one, shared) for sym, one in zip(symbols, own, strict=True)],
        rechunk=False,
    )
    if table.schema != FEATURE_SCHEMA:
        table = table.cast(FEATURE_SCHEMA)
    if futures is None:
        return table
    extra = futures_features(bars.select("symbol", "timestamp", "close"), futures, tf_ms=tf_ms)
    return table.join(extra, on=["symbol", "timestamp"], how="left", maintain_order="left").select(
        *FEATURE_SCHEMA, *FUTURES_COLUMNS
    )


def _symbol_rows(sym: str, own: pl.DataFrame, shared: pl.DataFrame) -> pl.DataFrame:
    """One symbol's rows of the table: its own columns and the per-timestamp ``shared`` ones
    (the same buffers on every symbol's rows, not copies), in ``FEATURE_SCHEMA`` order."""
    columns = {
        "symbol": pl.repeat(sym, own.height, dtype=pl.String, eager=True),
        **own.to_dict(),
        **shared.to_dict(),
    }
    return pl.DataFrame([columns[c].alias(c) for c in FEATURE_SCHEMA])


def forward_return(close: pl.Expr, horizon: int, ahead_in_segment: pl.Expr) -> pl.Expr:
    """The label's log return ``fwd_ret[t] = log(close[t + h] / close[t])``, ``h = horizon``
    rows ahead of rows in time order; null where ``ahead_in_segment`` is not true (row ``t + h``
    is not the bar ``h`` bars after ``t``: a label never spans a gap) and on the last ``h`` rows.
    The one definition of the label, shared by training and live scoring."""
    lc = close.log()
    return pl.when(ahead_in_segment).then(lc.shift(-horizon) - lc).alias("fwd_ret")


def direction_label(fwd_ret: pl.Expr) -> pl.Expr:
    """``y_up = fwd_ret > 0`` as Int8 (1 up, 0 flat or down; null where ``fwd_ret`` is)."""
    return (fwd_ret > 0).cast(pl.Int8).alias("y_up")


def _checked_symbols(bars: pl.DataFrame, horizon: int, warmup: int) -> list[str]:
    """The sorted symbols of ``bars``; ``SchemaError`` / ``ValueError`` when a column, a
    symbol the cross-asset features need, or a valid ``horizon`` / ``warmup`` is missing."""
    missing_cols = {"symbol", "timestamp", "high", "low", "close"} - set(bars.columns)
    if missing_cols:
        raise SchemaError(f"bars lack columns {sorted(missing_cols)}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {horizon}")
    if warmup < MIN_WARMUP:
        raise ValueError(
            f"warmup must be >= {MIN_WARMUP} bars (20-bar windows of returns), got {warmup}"
        )
    present = set(bars.get_column("symbol").unique().to_list())
    absent = required_symbols() - present
    if absent:
        raise ValueError(
            f"cross-asset features need symbols {sorted(required_symbols())}; "
            f"missing {sorted(absent)} (have {sorted(present)})"
        )
    return sorted(present)


def _ewm(x: pl.Expr, span: int, segmented: bool) -> pl.Expr:
    """``ewm_mean(span, adjust=False)`` restarted in every segment (one pass when there is one)."""
    ewm = x.ewm_mean(span=span, adjust=False)
    return ewm.over("seg") if segmented else ewm


def _symbol_features(sym: str, horizon: int, segmented: bool) -> list[pl.Expr]:
    """One symbol's own features on the wide frame (``close_{sym}`` etc.), gap-safe."""
    close = pl.col(f"close_{sym}")
    lc = close.log()
    first = pl.col("_row") == 0
    ret_1 = pl.when(first).then(None).otherwise(lc.diff())
    mean_20 = close.rolling_mean(20)
    std_20 = close.rolling_std(20)
    # Rolling windows run over the whole wide frame: mask the first 19 rows of each segment,
    # whose windows reach into the previous segment. A flat window (std at rounding level) is 0.
    z_20 = (
        pl.when(pl.col("_row") < 19)
        .then(None)
        .when(std_20 > close * 1e-12)
        .then((close - mean_20) / std_20)
        .otherwise(0.0)
    )
    return [
        close.alias("close"),
        ret_1.alias("ret_1"),
        *((close / _ewm(close, n, segmented) - 1.0).alias(f"ema_{n}") for n in (20, 50, 200)),
        z_20.alias("z_20"),
        pl.col(f"range_{sym}").alias("range"),
        # ret_1 is null on each segment's first row, so a window that spans a gap is null.
        ret_1.rolling_std(20).alias("vol_20"),
        forward_return(close, horizon, pl.col("_same_seg_ahead")),
    ]


def _cross_features(segmented: bool) -> dict[str, pl.Expr]:
    """Per-timestamp cross-asset columns on the wide frame: ratio deviations, raw ratios, BTC's
    return."""
    lead = pl.col(f"close_{LEAD_SYMBOL}").log()
    exprs: dict[str, pl.Expr] = {
        f"lead_ret_{LEAD_SYMBOL[:3]}": pl.when(pl.col("_row") == 0)
        .then(None)
        .otherwise(lead.diff())
    }
    for a, b, name in RATIO_PAIRS:
        log_ratio = (pl.col(f"close_{a}") / pl.col(f"close_{b}")).log()
        exprs[f"ratio_{name}"] = log_ratio - _ewm(log_ratio, RATIO_EMA_SPAN, segmented)
        exprs[f"ratio_{name.lower()}_raw"] = pl.col(f"close_{a}") / pl.col(f"close_{b}")
    return exprs
