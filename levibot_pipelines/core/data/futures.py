"""Perpetual-futures features of a spot bar: the funding rate and the basis (mark vs spot).

Inputs (long format, one frame each, ms UTC):

- spot bars ``symbol, timestamp, close``: ``timestamp`` is the bar's OPEN time on the ``tf_ms``
  grid; the bar closes at ``timestamp + tf_ms``.
- funding ``symbol, timestamp, funding_rate``: ``timestamp`` is the settlement time (on the 8h
  grid, 00:00/08:00/16:00 UTC for Binance; raw exchange times a few ms late are floored to the
  grid by the sources), ``funding_rate`` a fraction per funding interval (``0.0001`` = 1 bp).
- mark bars ``symbol, timestamp, close``: 1h mark-price candles, ``timestamp`` the OPEN time; a
  mark bar opened at ``m`` is complete at ``m + mark_tf_ms``.

Time alignment (every feature of row ``t`` is known at the CLOSE of bar ``t``, ``c = t + tf_ms``,
the instant every other feature of the table is computed at and the decision is made):

- funding: the last settlement ``s`` with ``s <= c`` (the close time, not the open time: a
  settlement at 08:00 is final at 08:00, which is the close of the 15m bar opened at 07:45, so
  that bar may use it; the bar opened at 08:00 closes at 08:15 and of course uses it too). A
  settlement older than ``max_funding_age_ms`` (default 9 h: one 8 h interval plus slack) is
  stale: the features are null rather than carried forward past a hole in the data.
- basis: the last mark bar COMPLETE at ``c``: open time ``m`` with ``m + mark_tf_ms <= c`` (a mark
  bar opened at 10:00 completes at 11:00, so the 15m bar closing at 10:15 uses the mark bar opened
  at 09:00). It is compared with the spot close AT THE SAME INSTANT ``m + mark_tf_ms`` (the close
  of the spot bar that closes then), not with the spot close of ``t``: that would mix up to 45
  minutes of spot return (tens of bps) into a basis of a few bps. A mark bar completed more than
  ``max_mark_age_ms`` (default 2 h) before ``c``, or whose instant has no spot bar, gives null.

Features (float64; null where the data above is missing or stale):

- ``funding_rate_bps``: the last settled funding rate, in bps per interval (``rate * 1e4``).
- ``funding_change_bps``: that rate minus the previous settlement's rate, in bps.
- ``funding_z``: ``(rate - mean) / max(std, Z_STD_FLOOR_BPS)`` over the trailing ``z_window``
  settlements (default 90 = 30 days at 8h) INCLUDING the current one (all settled by ``c``);
  sample std (ddof=1); null until the window is full. The std floor (0.5 bp) keeps a stretch of
  identical rates (Binance's default 1 bp) from turning a tiny change into a huge z.
- ``funding_extreme``: ``sign(funding_z)`` where ``|funding_z| >= EXTREME_Z`` (2), else 0.
- ``basis_bps``: ``1e4 * log(mark_close / spot_close)`` at the instant described above.

Symbols with no funding (or no mark) rows get null funding (basis) features.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

FUNDING_COLUMNS: tuple[str, ...] = (
    "funding_rate_bps",
    "funding_change_bps",
    "funding_z",
    "funding_extreme",
)
BASIS_COLUMNS: tuple[str, ...] = ("basis_bps",)
FUTURES_COLUMNS: tuple[str, ...] = FUNDING_COLUMNS + BASIS_COLUMNS
BPS = 1e4
Z_WINDOW = 90
Z_STD_FLOOR_BPS = 0.5
EXTREME_Z = 2.0
MARK_TF_MS = 3_600_000
MAX_FUNDING_AGE_MS = 9 * 3_600_000
MAX_MARK_AGE_MS = 2 * 3_600_000


@dataclass(frozen=True)
class FuturesData:
    """Funding settlements (``symbol, timestamp, funding_rate``) and 1h mark bars (``symbol,
    timestamp, close``) of the symbols that have them; see the module docstring for units."""

    funding: pl.DataFrame
    mark: pl.DataFrame

    def symbols(self) -> list[str]:
        """Symbols with any funding or mark row, sorted."""
        found = set(self.funding.get_column("symbol").unique().to_list())
        return sorted(found | set(self.mark.get_column("symbol").unique().to_list()))


def _require(df: pl.DataFrame, what: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """``df`` with ``columns`` cast (``symbol`` str, ``timestamp`` int64, the rest float64),
    sorted by ``symbol, timestamp``; ``ValueError`` naming the frame and what is wrong."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; found {df.columns}")
    types = {"symbol": pl.String, "timestamp": pl.Int64}
    out = df.select(pl.col(c).cast(types.get(c, pl.Float64)) for c in columns)
    dup = out.filter(pl.struct("symbol", "timestamp").is_duplicated())
    if dup.height:
        sym, ts = dup.row(0)[:2]
        raise ValueError(f"{what} has duplicate rows for symbol {sym!r} at timestamp {ts}")
    return out.sort("symbol", "timestamp")


def funding_features(
    spot: pl.DataFrame,
    funding: pl.DataFrame,
    *,
    tf_ms: int,
    z_window: int = Z_WINDOW,
    max_age_ms: int = MAX_FUNDING_AGE_MS,
) -> pl.DataFrame:
    """``FUNDING_COLUMNS`` for every spot bar: columns ``symbol, timestamp`` (spot open time) and
    the features, in ``spot``'s rows sorted by ``symbol, timestamp``. ``spot`` needs ``symbol,
    timestamp``; ``funding`` ``symbol, timestamp, funding_rate``; ``z_window >= 2``."""
    if z_window < 2:
        raise ValueError(f"z_window must be >= 2 settlements, got {z_window}")
    bars = _require(spot, "spot bars", ("symbol", "timestamp"))
    events = _require(funding, "funding", ("symbol", "timestamp", "funding_rate"))
    rate = pl.col("funding_rate") * BPS
    std = rate.rolling_std(z_window).over("symbol")
    z = (rate - rate.rolling_mean(z_window).over("symbol")) / pl.max_horizontal(
        std, pl.lit(Z_STD_FLOOR_BPS)
    )
    per_event = events.with_columns(
        funding_rate_bps=rate,
        funding_change_bps=(rate - rate.shift(1)).over("symbol"),
        funding_z=pl.when(std.is_not_null()).then(z),
        _settled=pl.col("timestamp"),
    ).with_columns(
        funding_extreme=pl.when(pl.col("funding_z").abs() >= EXTREME_Z)
        .then(pl.col("funding_z").sign())
        .otherwise(pl.when(pl.col("funding_z").is_not_null()).then(0.0))
    )
    events = per_event.drop("timestamp").sort("_settled")
    return _as_of_close(bars, events, "_settled", FUNDING_COLUMNS, tf_ms, max_age_ms)


def basis_features(
    spot: pl.DataFrame,
    mark: pl.DataFrame,
    *,
    tf_ms: int,
    mark_tf_ms: int = MARK_TF_MS,
    max_age_ms: int = MAX_MARK_AGE_MS,
) -> pl.DataFrame:
    """``basis_bps`` for every spot bar: columns ``symbol, timestamp, basis_bps`` in ``spot``'s
    rows sorted by ``symbol, timestamp``. ``spot`` needs ``symbol, timestamp, close``; ``mark``
    ``symbol, timestamp, close`` (mark bars of ``mark_tf_ms``)."""
    bars = _require(spot, "spot bars", ("symbol", "timestamp", "close"))
    marks = _require(mark, "mark bars", ("symbol", "timestamp", "close"))
    spot_at = bars.select("symbol", _at=pl.col("timestamp") + tf_ms, _spot=pl.col("close"))
    per_mark = (
        marks.select("symbol", _at=pl.col("timestamp") + mark_tf_ms, _mark=pl.col("close"))
        .join(spot_at, on=["symbol", "_at"], how="inner")
        .select("symbol", "_at", basis_bps=BPS * (pl.col("_mark") / pl.col("_spot")).log())
        .sort("_at")
    )
    return _as_of_close(bars, per_mark, "_at", ("basis_bps",), tf_ms, max_age_ms)


def _as_of_close(
    bars: pl.DataFrame,
    events: pl.DataFrame,
    at: str,
    columns: tuple[str, ...] | list[str],
    tf_ms: int,
    max_age_ms: int,
) -> pl.DataFrame:
    """``symbol, timestamp`` of ``bars`` with ``columns`` of each symbol's newest event known at
    the bar's close (``events[at] <= timestamp + tf_ms``; ``events`` sorted by ``at``), as
    Float64, null where that event is older than ``max_age_ms``; sorted by symbol, timestamp."""
    joined = (
        bars.with_columns(_close=pl.col("timestamp") + tf_ms)
        .sort("_close")
        .join_asof(
            events,
            left_on="_close",
            right_on=at,
            by="symbol",
            strategy="backward",
            check_sortedness=False,  # sorted by the key above; polars cannot check it with `by`
        )
    )
    fresh = (pl.col("_close") - pl.col(at)) <= max_age_ms
    return joined.select(
        "symbol",
        "timestamp",
        *(pl.when(fresh).then(pl.col(c)).cast(pl.Float64).alias(c) for c in columns),
    ).sort("symbol", "timestamp")


def futures_features(spot: pl.DataFrame, data: FuturesData, *, tf_ms: int) -> pl.DataFrame:
    """``symbol, timestamp`` and ``FUTURES_COLUMNS`` (float64) for every spot bar, sorted by
    ``symbol, timestamp``: ``funding_features`` and ``basis_features`` with their defaults."""
    fund = funding_features(spot, data.funding, tf_ms=tf_ms)
    basis = basis_features(spot, data.mark, tf_ms=tf_ms)
    return fund.join(basis, on=["symbol", "timestamp"], how="left").select(
        "symbol", "timestamp", *(pl.col(c).cast(pl.Float64) for c in FUTURES_COLUMNS)
    )
