"""Perpetual-futures sources: funding settlements and 1h mark-price bars, from files or ccxt.

Both sources answer ``funding(symbol, since_ms, until_ms)`` (``timestamp, funding_rate``: the
settlement time in ms UTC on the hour grid (ccxt floors Binance's few-ms-late times; a file's
times must already be on it), and the settled rate as a fraction per interval)
and ``mark(symbol, since_ms, until_ms)`` (``timestamp, open, high, low, close``: 1h mark-price
bars by open time), each with timestamps in ``[since_ms, until_ms]``, or None when the source has
no such data for the symbol. ``load_futures`` gathers them into ``core.data.futures.FuturesData``
and drops mark bars that are not complete at ``now_ms``.

Used by ``levibot evaluate --futures-dir`` (files); the production assets do not take them yet:
no setting selects a source, and the feature table and its checks keep their fixed columns.

- ``FuturesFilesSource``: the layout of ``shared/data/futures``: ``{SYMBOL}-funding-8h.parquet``
  and ``{SYMBOL}-mark-1h.parquet``.
- ``CcxtFuturesSource``: ccxt's ``fetch_funding_rate_history`` and mark OHLCV
  (``fetch_ohlcv(..., params={"price": "mark"})``) on ``binanceusdm`` by default, paginated and
  rate limited, with ``CcxtSource``'s bounded retry.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Protocol

import polars as pl

from levibot_pipelines.adapters.sources import CcxtSource, check_timestamp_unit
from levibot_pipelines.core.data.futures import MARK_TF_MS, FuturesData

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000
FUNDING_SCHEMA = {"timestamp": pl.Int64, "funding_rate": pl.Float64}
MARK_SCHEMA = {"timestamp": pl.Int64, **{c: pl.Float64 for c in ("open", "high", "low", "close")}}
MAX_ABS_FUNDING = 0.1  # 10% per interval: no exchange allows it; a larger value is bad units


class FuturesSource(Protocol):
    name: str

    def funding(self, symbol: str, since_ms: int, until_ms: int) -> pl.DataFrame | None: ...

    def mark(self, symbol: str, since_ms: int, until_ms: int) -> pl.DataFrame | None: ...


def check_funding(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """``FUNDING_SCHEMA`` columns of ``df``, sorted; ``ValueError`` naming ``where`` and the bad
    value for missing columns, non-integer or off-hour timestamps, duplicates, and rates that are
    not finite or not a plain fraction (``|rate| >= 0.1``)."""
    out = _checked_frame(df, where, FUNDING_SCHEMA)
    rate = out.get_column("funding_rate")
    bad = out.filter(~rate.is_finite() | (rate.abs() >= MAX_ABS_FUNDING))
    if bad.height:
        ts, value = bad.row(0)
        raise ValueError(
            f"{where}: funding_rate {value!r} at timestamp {ts} is not a finite fraction per "
            f"interval with |rate| < {MAX_ABS_FUNDING} (0.0001 = 0.01%)"
        )
    return out


def check_mark(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """``MARK_SCHEMA`` columns of ``df``, sorted; ``ValueError`` naming ``where`` and the bad value
    for missing columns, non-integer, off-hour or duplicate timestamps, and prices that are not
    finite and positive."""
    out = _checked_frame(df, where, MARK_SCHEMA)
    for col in ("open", "high", "low", "close"):
        bad = out.filter(~pl.col(col).is_finite() | (pl.col(col) <= 0))
        if bad.height:
            raise ValueError(
                f"{where}: {col} {bad[col][0]!r} at timestamp {bad['timestamp'][0]} is not a "
                "finite positive price"
            )
    return out


def _checked_frame(df: pl.DataFrame, where: str, schema: dict) -> pl.DataFrame:
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"{where} lacks columns {missing} (expected {list(schema)}); {df.columns}")
    ts = df.get_column("timestamp")
    if not ts.dtype.is_integer():
        raise ValueError(f"{where}: timestamp is {ts.dtype}, expected integer ms since the epoch")
    check_timestamp_unit(ts, Path(where), HOUR_MS)
    try:
        out = df.select(pl.col(c).cast(t) for c, t in schema.items()).sort("timestamp")
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{where}: a value column is not numeric ({exc})") from None
    off = out.filter(pl.col("timestamp") % HOUR_MS != 0)
    if off.height:
        raise ValueError(f"{where}: timestamp {off['timestamp'][0]} is not on the hour grid")
    dup = out.filter(pl.col("timestamp").is_duplicated())
    if dup.height:
        raise ValueError(f"{where}: timestamp {dup['timestamp'][0]} appears more than once")
    return out


class FuturesFilesSource:
    """Replay of ``{SYMBOL}-funding-8h.parquet`` and ``{SYMBOL}-mark-1h.parquet`` files (the
    layout of ``shared/data/futures``); a symbol without a file has no such data (None)."""

    name = "files"
    FUNDING_FILE = "{symbol}-funding-8h.parquet"
    MARK_FILE = "{symbol}-mark-1h.parquet"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"futures directory {str(self.directory)!r} is not a directory")

    def _read(self, path: Path) -> pl.DataFrame | None:
        if not path.exists():
            return None
        try:
            return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ValueError(
                f"{path} cannot be read as Parquet ({type(exc).__name__}: {first})"
            ) from None

    def missing_files(self, symbols: list[str] | tuple[str, ...]) -> list[Path]:
        """The funding and mark files of ``symbols`` that do not exist, in symbol order."""
        names = [f.format(symbol=s) for s in symbols for f in (self.FUNDING_FILE, self.MARK_FILE)]
        return [self.directory / n for n in names if not (self.directory / n).exists()]

    def funding(self, symbol: str, since_ms: int, until_ms: int) -> pl.DataFrame | None:
        path = self.directory / self.FUNDING_FILE.format(symbol=symbol)
        raw = self._read(path)
        if raw is None:
            return None
        out = check_funding(raw, str(path))
        return out.filter(pl.col("timestamp").is_between(since_ms, until_ms))

    def mark(self, symbol: str, since_ms: int, until_ms: int) -> pl.DataFrame | None:
        path = self.directory / self.MARK_FILE.format(symbol=symbol)
        raw = self._read(path)
        if raw is None:
            return None
        return check_mark(raw, str(path)).filter(pl.col("timestamp").is_between(since_ms, until_ms))


class CcxtFuturesSource(CcxtSource):
    """Funding history and 1h mark bars of a ccxt perpetual exchange (default ``binanceusdm``):
    pages of ``page_limit`` rows, ccxt's rate limiter, and ``CcxtSource``'s bounded retry (see
    that class: ``max_retries``, ``backoff_s``, ``timeout_ms``, ``retry_seconds`` per symbol and
    series). ``api_url`` replaces the futures public API root (``.../fapi/v1``, for tests)."""

    name = "ccxt"

    def __init__(self, exchange_id: str = "binanceusdm", *, api_url: str | None = None, **kw):
        super().__init__(exchange_id, timeframe="1h", **kw)
        self.exchange.options["fetchCurrencies"] = False  # a private endpoint (API key)
        if api_url:
            for key in ("public", "fapiPublic", "fapiPublicV2", "fapiPublicV3"):
                self.exchange.urls["api"][key] = api_url
            self.api_url = api_url

    def _unified(self, symbol: str) -> str | None:
        """The perpetual's unified symbol (``BTC/USDT:USDT``), or None when it has none."""
        self._retry(self.exchange.load_markets, f"{self.exchange_id} load_markets")
        for market in (self.exchange.markets_by_id or {}).get(symbol, []):
            if market.get("swap") and market.get("linear"):
                return market["symbol"]
        log.warning(
            "%s lists no linear perpetual %s: no futures features", self.exchange_id, symbol
        )
        return None

    def funding(self, symbol: str, since_ms: int, until_ms: int) -> pl.DataFrame | None:
        """Settlements in ``[since_ms, until_ms]``, times floored to the hour (Binance's raw
        ``fundingTime`` is a few ms late)."""
        self.failing_s = 0.0
        unified = self._unified(symbol)
        if unified is None:
            return None
        pages = self.row_pages(
            lambda c: self.exchange.fetch_funding_rate_history(
                unified, since=c, limit=self.page_limit, params={"until": until_ms}
            ),
            f"{self.exchange_id} fetch_funding_rate_history {symbol}",
            since_ms,
            until_ms,
            step_ms=1,
            time_of=lambda r: int(r["timestamp"]),
        )
        rows = [(int(r["timestamp"]), _number(r.get("fundingRate"))) for p in pages for r in p]
        df = pl.DataFrame(rows, schema=FUNDING_SCHEMA, orient="row")
        df = df.with_columns(pl.col("timestamp") // HOUR_MS * HOUR_MS).unique("timestamp")
        where = f"{self.exchange_id} funding of {symbol}"
        out = check_funding(df, where)
        return out.filter(pl.col("timestamp").is_between(since_ms, until_ms))

    def mark(self, symbol: str, since_ms: int, until_ms: int) -> pl.DataFrame | None:
        """1h mark bars with open times in ``[since_ms, until_ms]`` (the caller passes the
        newest COMPLETE bar as ``until_ms``; ``load_futures`` does)."""
        self.failing_s = 0.0
        unified = self._unified(symbol)
        if unified is None:
            return None
        pages = self.row_pages(
            lambda c: self.exchange.fetch_ohlcv(
                unified, "1h", since=c, limit=self.page_limit, params={"price": "mark"}
            ),
            f"{self.exchange_id} mark ohlcv {symbol}",
            since_ms,
            until_ms,
            step_ms=MARK_TF_MS,
        )
        rows = [(int(r[0]), *(_number(v) for v in r[1:5])) for p in pages for r in p]
        df = pl.DataFrame(rows, schema=MARK_SCHEMA, orient="row").unique("timestamp")
        out = check_mark(df, f"{self.exchange_id} mark bars of {symbol}")
        return out.filter(pl.col("timestamp").is_between(since_ms, until_ms))


def _number(value) -> float:
    """A float from an exchange field (None -> NaN, caught by the checks naming the row)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def load_futures(
    source: FuturesSource, symbols: list[str] | tuple[str, ...], *, since_ms: int, now_ms: int
) -> FuturesData:
    """Funding settled at or before ``now_ms`` and mark bars COMPLETE at ``now_ms`` (open time
    ``<= now_ms - 1 h``) from ``since_ms`` on, for every symbol the source has; ``ValueError``
    when it has none of ``symbols``."""
    mark_until = now_ms - MARK_TF_MS
    funding, mark = [], []
    for symbol in symbols:
        f = source.funding(symbol, since_ms, now_ms)
        m = source.mark(symbol, since_ms, mark_until)
        if f is None and m is None:
            log.warning("%s source has no futures data for %s", source.name, symbol)
        funding += [] if f is None else [f.with_columns(symbol=pl.lit(symbol, pl.String))]
        mark += [] if m is None else [m.with_columns(symbol=pl.lit(symbol, pl.String))]
    if not funding and not mark:
        where = getattr(source, "directory", getattr(source, "exchange_id", source.name))
        raise ValueError(f"no futures data for any of {list(symbols)} in {where}")
    empty = {"symbol": pl.String}
    return FuturesData(
        funding=pl.concat(funding) if funding else pl.DataFrame(schema=empty | FUNDING_SCHEMA),
        mark=pl.concat(mark) if mark else pl.DataFrame(schema=empty | MARK_SCHEMA),
    )


FUTURES_EXCHANGE = {"binance": "binanceusdm"}  # spot exchange id -> its perpetuals' ccxt id


def futures_source(setting: str | None, *, exchange: str = "binance", **kw) -> FuturesSource | None:
    """The source ``setting`` names: None (no futures features),
    ``ccxt`` (the perpetuals of the spot ``exchange``: ``binance`` -> ``binanceusdm``, others
    as is; ``kw`` go to ``CcxtFuturesSource``), or else a directory for ``FuturesFilesSource``."""
    if setting is None:
        return None
    if setting == "ccxt":
        return CcxtFuturesSource(FUTURES_EXCHANGE.get(exchange, exchange), **kw)
    return FuturesFilesSource(Path(setting))
