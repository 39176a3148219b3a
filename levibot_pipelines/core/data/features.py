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
    """
    symbols = _checked_symbols(bars, horizon, warmup)
    wide = _wide_frame(bars, symbols, tf_ms, horizon).with_columns(**_cross_features())
    frames = [
        wide.lazy()
        .select(
            pl.lit(sym, dtype=pl.String).alias("symbol"),
            "timestamp",
            *_symbol_features(sym, horizon),
            *CROSS_COLUMNS,
            *MONITOR_COLUMNS,
            "_row",
        )
        .filter(pl.col("_row") >= warmup - 1)
        .with_columns(direction_label(pl.col("fwd_ret")))
        .select(list(FEATURE_SCHEMA))
        for sym in symbols
    ]
    table = pl.concat(pl.collect_all(frames)).cast(FEATURE_SCHEMA)
    if futures is None:
        return table
    extra = futures_features(bars.select("symbol", "timestamp", "close"), futures, tf_ms=tf_ms)
    return table.join(extra, on=["symbol", "timestamp"], how="left", maintain_order="left").select(
        *FEATURE_SCHEMA, *FUTURES_COLUMNS
    )


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


def _wide_frame(bars: pl.DataFrame, symbols: list[str], tf_ms: int, horizon: int) -> pl.DataFrame:
    """One row per timestamp common to all ``symbols``, sorted, with ``high_{sym}``,
    ``low_{sym}``, ``close_{sym}`` (float64), the gap-free segment id ``seg``, the row's index
    ``_row`` inside its segment and ``_same_seg_ahead`` (row ``t + horizon`` is in the same
    segment, so the label does not span a gap)."""
    per_symbol = [
        bars.filter(pl.col("symbol") == sym).select(
            "timestamp",
            *(pl.col(c).cast(pl.Float64).alias(f"{c}_{sym}") for c in ("high", "low", "close")),
        )
        for sym in symbols
    ]
    wide = per_symbol[0]
    for one in per_symbol[1:]:
        wide = wide.join(one, on="timestamp", how="inner")
    wide = wide.sort("timestamp").with_columns(
        seg=(pl.col("timestamp").diff().fill_null(tf_ms) != tf_ms).cum_sum()
    )
    idx = pl.int_range(pl.len())
    return wide.with_columns(
        _row=idx
        - pl.when(pl.col("seg") != pl.col("seg").shift(1).fill_null(-1))
        .then(idx)
        .otherwise(None)
        .forward_fill(),
        _same_seg_ahead=pl.col("seg").shift(-horizon) == pl.col("seg"),
    )


def _symbol_features(sym: str, horizon: int) -> list[pl.Expr]:
    """One symbol's own features on the wide frame (``close_{sym}`` etc.), gap-safe."""
    close, high, low = pl.col(f"close_{sym}"), pl.col(f"high_{sym}"), pl.col(f"low_{sym}")
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
        *(
            (close / close.ewm_mean(span=n, adjust=False).over("seg") - 1.0).alias(f"ema_{n}")
            for n in (20, 50, 200)
        ),
        z_20.alias("z_20"),
        ((high - low) / close).alias("range"),
        # ret_1 is null on each segment's first row, so a window that spans a gap is null.
        ret_1.rolling_std(20).alias("vol_20"),
        forward_return(close, horizon, pl.col("_same_seg_ahead")),
    ]


def _cross_features() -> dict[str, pl.Expr]:
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
        exprs[f"ratio_{name}"] = log_ratio - log_ratio.ewm_mean(
            span=RATIO_EMA_SPAN, adjust=False
        ).over("seg")
        exprs[f"ratio_{name.lower()}_raw"] = pl.col(f"close_{a}") / pl.col(f"close_{b}")
    return exprs
