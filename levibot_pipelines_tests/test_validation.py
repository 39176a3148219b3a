import math

import polars as pl
import pytest

from levibot_pipelines.core.data.validation import (
    OHLCV_SCHEMA,
    SchemaError,
    count_gaps,
    validate_ohlcv,
)

TF = 900_000


def bars(rows):
    return pl.DataFrame(
        rows, schema=["timestamp", "open", "high", "low", "close", "volume"], orient="row"
    )


GOOD = (0, 10.0, 11.0, 9.0, 10.5, 1.0)


def test_every_rejection_reason_is_counted():
    raw = bars(
        [
            (0 * TF, 10.0, 11.0, 9.0, 10.5, 1.0),  # good
            (1 * TF, 10.0, 11.0, 9.0, math.nan, 1.0),  # nan
            (2 * TF + 1, 10.0, 11.0, 9.0, 10.5, 1.0),  # off grid
            (3 * TF, 0.0, 11.0, 9.0, 10.5, 1.0),  # non-positive price
            (4 * TF, 10.0, 10.2, 9.0, 10.5, 1.0),  # high below close
            (5 * TF, 10.0, 11.0, 10.1, 10.5, 1.0),  # low above open
            (6 * TF, 10.0, 11.0, 9.0, 10.5, -1.0),  # negative volume
            (7 * TF, 10.0, 11.0, 9.0, 10.5, 2.0),  # good
            (7 * TF, 99.0, 99.0, 99.0, 99.0, 9.0),  # duplicate: first kept
            (9 * TF, 10.0, 11.0, 9.0, 10.5, 2.0),  # not closed yet
        ]
    )
    result = validate_ohlcv(raw, symbol="BTCUSDT", source="test", tf_ms=TF, last_closed_ms=8 * TF)
    assert result.rejected == {
        "nan": 1,
        "off_grid": 1,
        "open_bar": 1,
        "non_positive_price": 1,
        "high_below_open_close": 1,
        "low_above_open_close": 1,
        "negative_volume": 1,
        "duplicate_timestamp": 1,
    }
    assert result.n_rejected == 8
    assert dict(result.bars.schema) == OHLCV_SCHEMA
    assert result.bars["timestamp"].to_list() == [0, 7 * TF]
    assert result.bars.filter(pl.col("timestamp") == 7 * TF)["open"].item() == 10.0
    assert result.bars["symbol"].unique().to_list() == ["BTCUSDT"]
    assert result.bars["source"].unique().to_list() == ["test"]


def test_clean_bars_are_sorted_and_nothing_rejected():
    raw = bars([(2 * TF, *GOOD[1:]), (0, *GOOD[1:]), (TF, *GOOD[1:])])
    result = validate_ohlcv(raw, symbol="X", source="t", tf_ms=TF)
    assert result.rejected == {}
    assert result.bars["timestamp"].to_list() == [0, TF, 2 * TF]


def test_schema_errors_name_the_problem():
    with pytest.raises(SchemaError, match=r"lacks columns \['volume'\]"):
        validate_ohlcv(bars([GOOD]).drop("volume"), symbol="BTCUSDT", source="t", tf_ms=TF)
    with pytest.raises(SchemaError, match="non-numeric"):
        validate_ohlcv(
            bars([GOOD]).with_columns(pl.lit("abc").alias("close")),
            symbol="BTCUSDT",
            source="t",
            tf_ms=TF,
        )


def test_count_gaps():
    ts = pl.Series([0, TF, 2 * TF, 5 * TF, 6 * TF, 8 * TF])
    assert count_gaps(ts, TF) == (2, 3)  # 3*TF, 4*TF missing; 7*TF missing
    assert count_gaps(pl.Series([0, TF]), TF) == (0, 0)
    assert count_gaps(pl.Series([], dtype=pl.Int64), TF) == (0, 0)
