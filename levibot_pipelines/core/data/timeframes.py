"""Bar-grid arithmetic. A bar's ``timestamp`` is its open time in ms UTC; bar ``t`` covers
``[t, t + tf)`` and its close is first known at ``t + tf``."""

from __future__ import annotations

from datetime import UTC, datetime

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


def freshness_state(stale_minutes: float, warn_minutes: float, fail_minutes: float) -> str:
    """``"PASS"`` / ``"WARN"`` / ``"FAIL"`` for a data-time staleness in minutes (``inf`` = no
    data: FAIL): WARN above ``warn_minutes``, FAIL above ``fail_minutes`` (settings
    ``max_staleness_minutes`` 5 and ``fail_staleness_minutes`` 30)."""
    if not stale_minutes >= 0:  # NaN compares False
        raise ValueError(f"stale_minutes={stale_minutes!r}: expected a number >= 0 (inf = no data)")
    if stale_minutes > fail_minutes:
        return "FAIL"
    if stale_minutes > warn_minutes:
        return "WARN"
    return "PASS"


_UTC_STYLES = ("minutes", "seconds", "milliseconds")


def utc_text(ms: int | None, style: str = "minutes", missing: str = "-") -> str:
    """A ms UTC timestamp as text; ``missing`` (default ``"-"``) for ``None``.

    ``style``: ``"minutes"`` -> ``"2026-11-24 10:00 UTC"`` (for people: CLI tables, reasons),
    ``"seconds"`` -> ``"2026-11-24T10:00:00Z"``, ``"milliseconds"`` ->
    ``"2026-11-24T10:00:00.000Z"`` (the API's ISO 8601 fields).
    """
    if style not in _UTC_STYLES:
        raise ValueError(f"style must be one of {_UTC_STYLES}, got {style!r}")
    if ms is None:
        return missing
    t = datetime.fromtimestamp(ms / 1000, UTC)
    if style == "minutes":
        return t.strftime("%Y-%m-%d %H:%M UTC")
    return t.isoformat(timespec=style).removesuffix("+00:00") + "Z"
