"""The feature table after its speed-up equals the one before it, on every input layout.

``_previous_build_features`` below is ``build_features`` as it was before (a join of every
symbol's bars, the window functions over segments, a filter per symbol), kept here as the
reference. Floats may differ in the last bits only where polars' rolling kernels ran over other
chunks (the old engine split the frame into morsels), hence ``1e-12``.
"""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from benchmarks.run import _straightforward_features
from levibot_pipelines.core.data.common_grid import _aligned_runs, common_grid
from levibot_pipelines.core.data.features import (
    _BAR_COLUMNS,
    CROSS_COLUMNS,
    FEATURE_SCHEMA,
    LEAD_SYMBOL,
    MONITOR_COLUMNS,
    RATIO_EMA_SPAN,
    RATIO_PAIRS,
    WARMUP_BARS,
    _checked_symbols,
    build_features,
    direction_label,
    forward_return,
)
from levibot_pipelines_tests.conftest import SYMBOLS, TF_MS, synthetic_long


def _previous_build_features(
    bars: pl.DataFrame, *, tf_ms: int, horizon: int, warmup: int = WARMUP_BARS
) -> pl.DataFrame:
    symbols = _checked_symbols(bars, horizon, warmup)
    wide = _previous_wide_frame(bars, symbols, tf_ms, horizon).with_columns(
        **_previous_cross_features()
    )
    frames = [
        wide.lazy()
        .select(
            pl.lit(sym, dtype=pl.String).alias("symbol"),
            "timestamp",
            *_previous_symbol_features(sym, horizon),
            *CROSS_COLUMNS,
            *MONITOR_COLUMNS,
            "_row",
        )
        .filter(pl.col("_row") >= warmup - 1)
        .with_columns(direction_label(pl.col("fwd_ret")))
        .select(list(FEATURE_SCHEMA))
        for sym in symbols
    ]
    return pl.concat(pl.collect_all(frames)).cast(FEATURE_SCHEMA)


def _previous_wide_frame(
    bars: pl.DataFrame, symbols: list[str], tf_ms: int, horizon: int
) -> pl.DataFrame:
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


def _previous_symbol_features(sym: str, horizon: int) -> list[pl.Expr]:
    close, high, low = pl.col(f"close_{sym}"), pl.col(f"high_{sym}"), pl.col(f"low_{sym}")
    lc = close.log()
    ret_1 = pl.when(pl.col("_row") == 0).then(None).otherwise(lc.diff())
    mean_20 = close.rolling_mean(20)
    std_20 = close.rolling_std(20)
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
        ret_1.rolling_std(20).alias("vol_20"),
        forward_return(close, horizon, pl.col("_same_seg_ahead")),
    ]


def _previous_cross_features() -> dict[str, pl.Expr]:
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


N_BARS = 1200


def _without(bars: pl.DataFrame, symbol: str | None, first: int, last: int) -> pl.DataFrame:
    """``bars`` less bars ``first..last`` (indices on the grid) of ``symbol`` (None: all)."""
    hole = pl.col("timestamp").is_between(first * TF_MS, last * TF_MS)
    return bars.filter(~(hole & (pl.col("symbol") == symbol if symbol else hole)))


def _in_two_chunks(bars: pl.DataFrame) -> pl.DataFrame:
    """The same rows with a chunk boundary inside a symbol (a Parquet file of row groups)."""
    return pl.concat([bars.slice(0, 700), bars.slice(700)], rechunk=False)


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    """Validated bars in the store's layout: one contiguous, sorted run per symbol."""
    return synthetic_long(N_BARS, seed=11)


LAYOUTS = {
    "store layout": lambda b: b,
    "two chunks": _in_two_chunks,
    "float32 prices": lambda b: b.with_columns(pl.col("high", "low", "close").cast(pl.Float32)),
    "shuffled rows": lambda b: b.sample(fraction=1.0, shuffle=True, seed=3),
    "gap in one symbol": lambda b: _without(b, "ETHUSDT", 500, 504),
    "gap in every symbol": lambda b: _without(_without(b, None, 300, 300), None, 900, 910),
    "a symbol listed later": lambda b: _without(b, "SOLUSDT", 0, 99),
    "a fourth symbol": lambda b: pl.concat(
        [b, b.filter(pl.col("symbol") == "SOLUSDT").with_columns(symbol=pl.lit("ADAUSDT"))]
    ),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("horizon", "warmup"), [(1, WARMUP_BARS), (3, 21)])
def test_matches_the_previous_implementation(bars, layout, horizon, warmup):
    given = LAYOUTS[layout](bars)
    new = build_features(given, tf_ms=TF_MS, horizon=horizon, warmup=warmup)
    old = _previous_build_features(given, tf_ms=TF_MS, horizon=horizon, warmup=warmup)
    assert new.schema == old.schema == FEATURE_SCHEMA
    assert new.height > 0
    assert_frame_equal(new, old, rel_tol=1e-12, abs_tol=1e-12)


def test_gaps_are_exercised(bars):
    """The layouts above do reach the segmented path: rows are dropped after every gap."""
    out = build_features(LAYOUTS["gap in every symbol"](bars), tf_ms=TF_MS, horizon=1)
    per_symbol = out.height // 3
    # segments 0..299, 301..899, 911..1199: 300, 599, 289 rows, each less its 199 warm-up rows
    assert per_symbol == (300 - 199) + (599 - 199) + (289 - 199)


def test_zero_copy_path_and_join_path_agree_exactly(bars):
    """The store layout is placed side by side without a join, and gives bit for bit what the
    join of shuffled rows gives; so does the whole table."""
    symbols = list(SYMBOLS)
    shuffled = LAYOUTS["shuffled rows"](bars)
    assert _aligned_runs(bars, symbols) is not None
    assert _aligned_runs(shuffled, symbols) is None
    assert _aligned_runs(LAYOUTS["a symbol listed later"](bars), symbols) is None
    grids = [
        common_grid(b, symbols, _BAR_COLUMNS, tf_ms=TF_MS, horizon=2) for b in (bars, shuffled)
    ]
    assert_frame_equal(grids[0], grids[1], check_exact=True)
    assert_frame_equal(
        build_features(bars, tf_ms=TF_MS, horizon=2),
        build_features(shuffled, tf_ms=TF_MS, horizon=2),
        check_exact=True,
    )


def test_the_table_does_not_depend_on_how_the_bars_are_chunked(bars):
    assert_frame_equal(
        build_features(bars, tf_ms=TF_MS, horizon=1),
        build_features(_in_two_chunks(bars), tf_ms=TF_MS, horizon=1),
        check_exact=True,
    )


def test_the_benchmarks_straightforward_reference_computes_the_same_table(bars):
    """``benchmarks/run.py`` times ``build_features`` against this reference (no gaps)."""
    for horizon in (1, 4):
        assert_frame_equal(
            _straightforward_features(bars, tf_ms=TF_MS, horizon=horizon),
            build_features(bars, tf_ms=TF_MS, horizon=horizon),
            rel_tol=1e-12,
            abs_tol=1e-12,
        )
