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
from levibot_pipelines.core.data.synthetic import simulate_bars
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

    def __init__(self, *, start_ms: int, tf_ms: int, seed: int) -> None:
        self.start_ms, self.tf_ms, self.seed = start_ms, tf_ms, seed

    def pages(self, symbol: str, since_ms: int, until_ms: int) -> Iterator[pl.DataFrame]:
        bars = simulate_bars(symbol, self.start_ms, until_ms, self.tf_ms, seed=self.seed)
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
        path = self.path_for(symbol)
        lf = pl.scan_parquet(path) if path.suffix == ".parquet" else pl.scan_csv(path)
        yield (
            lf.select(RAW_COLUMNS)
            .filter(pl.col("timestamp").is_between(since_ms, until_ms))
            .collect()
        )


class CcxtSource:
    """Paginated OHLCV from any ccxt exchange, rate limited, with bounded exponential-backoff retry
    on what ccxt classes as recoverable (``OperationFailed``: its ``NetworkError`` family of
    timeouts, 429/418 rate limits, 5xx and DDoS protection, plus exchange codes such as Binance's
    -1000 "unknown error"). Everything else (bad symbol, auth, bad request) is raised at once."""

    name = "ccxt"

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
    ) -> None:
        if exchange_id not in ccxt.exchanges:
            raise ValueError(
                f"unknown exchange {exchange_id!r} (LEVIBOT_EXCHANGE); ccxt knows "
                f"{len(ccxt.exchanges)} exchanges, for example binance, bybit, kraken, okx"
            )
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
        self.retries = 0

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        for attempt in range(self.max_retries + 1):
            try:
                return fn()
            except ccxt.OperationFailed as exc:
                if attempt == self.max_retries:
                    raise
                delay = self.backoff_s * 2**attempt
                self.retries += 1
                reason = redact_text(str(exc), self.api_url)  # ccxt quotes the request URL
                log.warning("%s failed (%s); retry %d in %.2fs", what, reason, attempt + 1, delay)
                time.sleep(delay)
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

    def pages(self, symbol: str, since_ms: int, until_ms: int) -> Iterator[pl.DataFrame]:
        unified = self.market_symbol(symbol)
        cursor = since_ms
        while cursor <= until_ms:
            rows = self._retry(
                lambda c=cursor: self.exchange.fetch_ohlcv(
                    unified, self.timeframe, since=c, limit=self.page_limit
                ),
                f"{self.exchange_id} fetch_ohlcv {symbol} since {cursor}",
            )
            if not rows:
                break
            page = pl.DataFrame(
                [r[:6] for r in rows], schema=list(RAW_SCHEMA), orient="row", strict=False
            ).cast(RAW_SCHEMA, strict=False)
            newest = int(page.get_column("timestamp").max())
            yield page.filter(pl.col("timestamp").is_between(since_ms, until_ms))
            if newest < cursor:
                break
            cursor = newest + self.tf_ms
