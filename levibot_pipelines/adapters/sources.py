"""Candle sources: ccxt exchanges, a synthetic market, and file replay.

Each source yields raw pages of closed bars (``timestamp, open, high, low, close, volume``) with
open times in ``[since_ms, until_ms]``; ``until_ms`` is the newest closed bar, so a still-open
bar is never returned. Validation happens once, in ``ingest.ingest_symbol``, for every source.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import ccxt
import polars as pl

from levibot_pipelines.adapters.redact import redact_text
from levibot_pipelines.core.data.synthetic import PlantedEdge, simulate_bars
from levibot_pipelines.core.data.timeframes import timeframe_to_ms
from levibot_pipelines.core.data.validation import RAW_COLUMNS

log = logging.getLogger(__name__)
T = TypeVar("T")
RAW_SCHEMA = {"timestamp": pl.Int64, **{c: pl.Float64 for c in RAW_COLUMNS[1:]}}


class Source(Protocol):
    name: str

    def pages(self, symbol: str, since_ms: int, until_ms: int) -> Iterator[pl.DataFrame]: ...


class SyntheticSource:
    """The seeded market of ``core.data.synthetic``, generated from ``start_ms`` up to the
    request."""

    name = "synthetic"

    def __init__(
        self, *, start_ms: int, tf_ms: int, seed: int, edge: PlantedEdge | None = None
    ) -> None:
        """``edge``: the optional planted reversal (LEVIBOT_SYNTHETIC_EDGE; None: none)."""
        self.start_ms, self.tf_ms, self.seed, self.edge = start_ms, tf_ms, seed, edge

    def pages(self, symbol: str, since_ms: int, until_ms: int) -> Iterator[pl.DataFrame]:
        bars = simulate_bars(
            symbol, self.start_ms, until_ms, self.tf_ms, seed=self.seed, edge=self.edge
        )
        yield bars.filter(pl.col("timestamp") >= since_ms)


class FilesSource:
    """Replay of candle files in the layout of ``shared/data/ohlcv``: one file per symbol,
    ``{SYMBOL}-{timeframe}.parquet`` (or ``{SYMBOL}.parquet``, or the same names as ``.csv``)."""

    name = "files"

    def __init__(self, directory: Path, timeframe: str) -> None:
        self.directory = Path(directory)
        self.timeframe = timeframe
        if not self.directory.is_dir():
            raise ValueError(f"LEVIBOT_FILES_DIR={str(self.directory)!r} is not a directory")

    def path_for(self, symbol: str) -> Path:
        names = [f"{symbol}-{self.timeframe}", symbol]
        for name in names:
            for ext in (".parquet", ".csv"):
                path = self.directory / f"{name}{ext}"
                if path.exists():
                    return path
        raise ValueError(
            f"no candle file for symbol {symbol!r} in {self.directory}; expected one of "
            f"{[n + e for n in names for e in ('.parquet', '.csv')]}"
        )

    def pages(self, symbol: str, since_ms: int, until_ms: int) -> Iterator[pl.DataFrame]:
        """The file's bars with open times in ``[since_ms, until_ms]``; ``ValueError`` naming the
        file when it cannot be read, lacks ``RAW_COLUMNS``, has no rows, or its timestamps are
        not integer ms since the epoch (checked before the window, so a file in seconds is an
        error rather than "0 bars ingested")."""
        path = self.path_for(symbol)
        raw = read_candle_file(path)
        check_timestamp_unit(raw.get_column("timestamp"), path, timeframe_to_ms(self.timeframe))
        yield raw.filter(pl.col("timestamp").is_between(since_ms, until_ms))


def read_candle_file(path: Path) -> pl.DataFrame:
    """``RAW_COLUMNS`` of the Parquet or comma-separated CSV file at ``path``; ``ValueError``
    naming the file for an unreadable, empty or header-only file, missing columns, or a
    timestamp column that is not numeric."""
    try:
        df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    except pl.exceptions.NoDataError:
        raise ValueError(f"{path} has no rows") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(
            f"{path} cannot be read as a candle file ({type(exc).__name__}: {first})"
        ) from None
    missing = [c for c in RAW_COLUMNS if c not in df.columns]
    if missing:
        hint = ""
        if len(df.columns) == 1 and ";" in df.columns[0]:
            hint = "; is it ';'-separated? expected a comma-separated file"
        raise ValueError(
            f"{path} lacks columns {missing} (expected {list(RAW_COLUMNS)}); "
            f"found {df.columns}{hint}"
        )
    if df.height == 0:
        raise ValueError(f"{path} has no rows")
    dtype = df.schema["timestamp"]
    if not dtype.is_numeric():
        raise ValueError(
            f"{path}: timestamp column is {_dtype_name(dtype)}, expected integer ms since the "
            "epoch, UTC"
        )
    return df.select(RAW_COLUMNS)


def _dtype_name(dtype: pl.DataType) -> str:
    return "str" if dtype == pl.String else str(dtype)


SECONDS_BELOW = 10**11  # 1e11 ms is 1973-03-03; 1e11 s is the year 5138
MS_BELOW = 10**14  # 1e14 ms is the year 5138; epoch microseconds passed it in 1973


def check_timestamp_unit(ts: pl.Series, path: Path, tf_ms: int) -> None:
    """``ValueError`` naming ``path`` and a sample value when the open times ``ts`` are not ms
    since the epoch: any value >= 1e14 (micro- or nanoseconds), or all values < 1e11 (before
    1973) and some off the ``tf_ms`` grid (seconds). Small ms values all on the grid (a replay
    starting at the epoch) pass."""
    ts = ts.drop_nulls().cast(pl.Int64, strict=False).drop_nulls()
    if ts.len() == 0:
        return
    top = int(ts.max())
    if top >= MS_BELOW:
        unit = "microseconds" if top < 10**17 else "nanoseconds"
    elif top < SECONDS_BELOW and not bool((ts % tf_ms == 0).all()):
        unit = "seconds"
    else:
        return
    raise ValueError(
        f"timestamp must be ms since the epoch, UTC; {path} looks like {unit} ({int(ts[0])})"
    )


class CcxtSource:
    """Paginated OHLCV from any ccxt exchange, rate limited, with bounded exponential-backoff retry
    on what ccxt classes as recoverable (``OperationFailed``: its ``NetworkError`` family of
    timeouts, 429/418 rate limits, 5xx and DDoS protection, plus exchange codes such as Binance's
    -1000 "unknown error"). Everything else (bad symbol, auth, bad request) is raised at once.

    This is the one layer that retries the exchange (the ``ohlcv`` asset has no Dagster
    ``RetryPolicy``; the next schedule tick is the next try), with two bounds per fetch (one
    ``pages`` call, i.e. one symbol in one tick):

    - attempts: at most ``max_retries + 1`` (default 6) per request; an outage fails the first
      request that meets it, so a tick makes at most that many failed attempts;
    - time: at most ``retry_seconds`` (default 60, LEVIBOT_SOURCE_RETRY_SECONDS) spent in failed
      attempts and backoff sleeps together. Each request's timeout (``timeout_ms``, default 10 s)
      is cut to what is left of that budget, and no retry starts with less than
      ``MIN_ATTEMPT_S`` left after its backoff, so a hanging exchange is given up on in time.

    ``backoff_s`` (seconds) doubles after each failed attempt: 0.5, 1, 2, 4, 8 by default.
    """

    name = "ccxt"
    MIN_ATTEMPT_S = 0.5  # a retry needs at least this much of the budget after its backoff

    def __init__(
        self,
        exchange_id: str,
        *,
        timeframe: str,
        api_url: str | None = None,
        page_limit: int = 1000,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        timeout_ms: int = 10_000,
        retry_seconds: float = 60.0,
    ) -> None:
        if exchange_id not in ccxt.exchanges:
            raise ValueError(
                f"unknown exchange {exchange_id!r} (LEVIBOT_EXCHANGE); ccxt knows "
                f"{len(ccxt.exchanges)} exchanges, for example binance, bybit, kraken, okx"
            )
        if not retry_seconds > 0:
            raise ValueError(f"retry_seconds must be > 0 seconds, got {retry_seconds!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        config: dict = {"enableRateLimit": True, "timeout": timeout_ms}
        if exchange_id == "binance":
            # Spot markets only, and no currency endpoint (it needs an API key).
            config["options"] = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}
        self.exchange = getattr(ccxt, exchange_id)(config)
        if api_url:
            if isinstance(self.exchange.urls.get("api"), dict):
                self.exchange.urls["api"]["public"] = api_url
            else:
                self.exchange.urls["api"] = api_url
        self.exchange_id = exchange_id
        self.api_url = api_url
        self.timeframe = timeframe
        self.tf_ms = int(self.exchange.parse_timeframe(timeframe) * 1000)
        self.page_limit = page_limit
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_ms = timeout_ms
        self.retry_seconds = retry_seconds
        self.retries = 0  # retries since construction, every fetch together
        self.failing_s = 0.0  # seconds failed (attempts + sleeps) in the current fetch

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        """``fn()``, retried on ``ccxt.OperationFailed`` within both bounds (see the class)."""
        for attempt in range(self.max_retries + 1):
            left_s = self.retry_seconds - self.failing_s
            self.exchange.timeout = max(1, int(min(self.timeout_ms, left_s * 1000)))
            started = time.monotonic()
            try:
                return fn()
            except ccxt.OperationFailed as exc:
                self.failing_s += time.monotonic() - started
                delay = self.backoff_s * 2**attempt
                reason = redact_text(str(exc), self.api_url)  # ccxt quotes the request URL
                left_s = self.retry_seconds - self.failing_s - delay
                if attempt == self.max_retries or left_s < self.MIN_ATTEMPT_S:
                    log.warning(
                        "%s failed (%s); giving up after %d attempts, %.1fs failing "
                        "(at most %d attempts, %.0fs)",
                        what,
                        reason,
                        attempt + 1,
                        self.failing_s,
                        self.max_retries + 1,
                        self.retry_seconds,
                    )
                    raise
                self.retries += 1
                log.warning("%s failed (%s); retry %d in %.2fs", what, reason, attempt + 1, delay)
                time.sleep(delay)
                self.failing_s += delay
        raise AssertionError("unreachable")

    def market_symbol(self, symbol: str) -> str:
        """Unified ccxt symbol (``BTC/USDT``) for an exchange id like ``BTCUSDT``."""
        markets = self._retry(self.exchange.load_markets, f"{self.exchange_id} load_markets")
        by_id = self.exchange.markets_by_id or {}
        if symbol in by_id:
            return by_id[symbol][0]["symbol"]
        if symbol in markets:
            return symbol
        raise ValueError(
            f"unknown symbol {symbol!r} on {self.exchange_id} (LEVIBOT_SYMBOLS); "
            f"it lists {len(by_id)} markets, for example {sorted(by_id)[:5]}"
        )

    def row_pages(
        self,
        fetch: Callable[[int], list],
        what: str,
        since_ms: int,
        until_ms: int,
        *,
        step_ms: int,
        time_of: Callable[[object], int] = lambda row: int(row[0]),
    ) -> Iterator[list]:
        """Raw pages ``fetch(cursor)`` from ``since_ms`` to ``until_ms``, each through
        ``_retry`` (``what`` names it in the log): the next cursor is the page's newest row time
        (``time_of``, ms) plus ``step_ms``; stops at an empty page, past ``until_ms``, or at a
        page that does not advance. The caller resets ``failing_s`` once per series."""
        cursor = since_ms
        while cursor <= until_ms:
            rows = self._retry(lambda c=cursor: fetch(c), f"{what} since {cursor}")
            if not rows:
                return
            newest = max(time_of(r) for r in rows)
            yield rows
            if newest < cursor:
                return
            cursor = newest + step_ms

    def pages(self, symbol: str, since_ms: int, until_ms: int) -> Iterator[pl.DataFrame]:
        """Pages of at most ``page_limit`` bars from ``since_ms`` to ``until_ms``; one fetch,
        whose failures share one ``retry_seconds`` budget."""
        self.failing_s = 0.0
        unified = self.market_symbol(symbol)
        for rows in self.row_pages(
            lambda c: self.exchange.fetch_ohlcv(
                unified, self.timeframe, since=c, limit=self.page_limit
            ),
            f"{self.exchange_id} fetch_ohlcv {symbol}",
            since_ms,
            until_ms,
            step_ms=self.tf_ms,
        ):
            page = pl.DataFrame(
                [r[:6] for r in rows], schema=list(RAW_SCHEMA), orient="row", strict=False
            ).cast(RAW_SCHEMA, strict=False)
            yield page.filter(pl.col("timestamp").is_between(since_ms, until_ms))
