"""Bar-grid arithmetic. A bar's ``timestamp`` is its open time in ms UTC; bar ``t`` covers
``[t, t + tf)`` and its close is first known at ``t + tf``."""

from __future__ import annotations

TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


def timeframe_to_ms(timeframe: str) -> int:
    """Bar length in milliseconds for a ccxt-style timeframe string such as ``"15m"``."""
    if timeframe not in TIMEFRAME_MS:
        raise ValueError(f"unknown timeframe {timeframe!r}; expected one of {list(TIMEFRAME_MS)}")
    return TIMEFRAME_MS[timeframe]


def last_closed_bar(now_ms: int, tf_ms: int) -> int:
    """Open time of the newest bar whose close is known at ``now_ms``.

    At 10:16 with 15m bars that is the 10:00 bar (closed at 10:15); at exactly 10:15 too.
    """
    return (now_ms // tf_ms) * tf_ms - tf_ms


def data_lag_ms(last_bar_ms: int, now_ms: int, tf_ms: int) -> int:
    """Age of the newest stored bar's close at ``now_ms`` (0 or more)."""
    return max(0, now_ms - (last_bar_ms + tf_ms))


def staleness_minutes(last_bar_ms: int | None, now_ms: int, tf_ms: int) -> float:
    """Staleness measured in data time.

    Zero while ``last_bar_ms`` is the newest closed bar at ``now_ms``; otherwise the minutes since
    the first missing bar (``last_bar_ms + tf``) closed, at ``last_bar_ms + 2 * tf``. ``None``
    (no data at all) is infinitely stale.
    """
    if last_bar_ms is None:
        return float("inf")
    if last_bar_ms >= last_closed_bar(now_ms, tf_ms):
        return 0.0
    return (now_ms - (last_bar_ms + 2 * tf_ms)) / 60_000
