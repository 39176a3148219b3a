import pytest

from levibot_pipelines.core.data.timeframes import (
    data_lag_ms,
    last_closed_bar,
    staleness_minutes,
    timeframe_to_ms,
    utc_text,
)

TF = 900_000
T10_00 = 1_700_000_100_000 - (1_700_000_100_000 % TF)  # some bar open on the grid
MIN = 60_000


def test_last_closed_bar():
    # At open+16 min the bar that opened at open is closed (close at +15 min); at +14 min it is not.
    assert last_closed_bar(T10_00 + 16 * MIN, TF) == T10_00
    assert last_closed_bar(T10_00 + 15 * MIN, TF) == T10_00
    assert last_closed_bar(T10_00 + 14 * MIN, TF) == T10_00 - TF


def test_staleness_in_data_time():
    now = T10_00 + 16 * MIN
    assert staleness_minutes(T10_00, now, TF) == 0.0  # holds the newest closed bar
    # Newest stored bar opened 15 min earlier: the first missing bar (T10_00) closed 1 min ago.
    assert staleness_minutes(T10_00 - TF, now, TF) == pytest.approx(1.0)
    assert staleness_minutes(T10_00 - 3 * TF, now, TF) == pytest.approx(31.0)
    assert staleness_minutes(None, now, TF) == float("inf")


def test_data_lag_and_timeframes():
    assert data_lag_ms(T10_00, T10_00 + 16 * MIN, TF) == MIN
    assert timeframe_to_ms("1h") == 3_600_000
    with pytest.raises(ValueError, match="unknown timeframe '2m'"):
        timeframe_to_ms("2m")


def test_utc_text_styles():
    # 2026-11-24 10:00:00 UTC = 20_781 days after 1970-01-01, plus 10 h: 1_795_514_400_000 ms.
    ms = 20_781 * 86_400_000 + 10 * 3_600_000
    assert utc_text(ms) == "2026-11-24 10:00 UTC"
    assert utc_text(ms, "seconds") == "2026-11-24T10:00:00Z"
    assert utc_text(ms, "milliseconds") == "2026-11-24T10:00:00.000Z"
    assert utc_text(ms + 59_123, "milliseconds") == "2026-11-24T10:00:59.123Z"
    assert utc_text(ms + 59_123) == "2026-11-24 10:00 UTC"  # truncated, not rounded
    assert utc_text(None) == "-" and utc_text(None, "seconds") == "-"
    assert utc_text(None, missing="?") == "?"
    with pytest.raises(ValueError, match="style must be one of"):
        utc_text(ms, "hours")
