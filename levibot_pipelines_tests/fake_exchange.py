"""A local HTTP server speaking Binance's public spot API (``/api/v3/exchangeInfo`` and
``/api/v3/klines``) over in-memory candles, so ccxt runs unmodified against it.

Test hooks: ``fail_next`` queues HTTP statuses for the next kline requests (429, 500, ...),
``fail_from`` makes every kline request from that index on fail (an outage),
``corrupt`` overrides fields of chosen bars, ``visible_until`` hides bars after a time (a live
feed that grows), and ``kline_requests`` records every kline query.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlparse

import polars as pl

TF_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}


class JsonServer:
    """A JSON HTTP server on a loopback port the OS picks, served from a thread while used as a
    context manager: every GET is ``self.answer(path, query) -> (status, body)``. ``api_url``
    is the base URL plus ``API_ROOT``. Subclasses set their state, then call
    ``super().__init__()``."""

    API_ROOT = ""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.API_ROOT}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, object]:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                status, body = fake.answer(url.path, query)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _market(symbol: str) -> dict:
    base, quote = symbol[:-4], symbol[-4:]
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01",
                "maxPrice": "1000000",
                "tickSize": "0.01",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00001",
                "maxQty": "9000",
                "stepSize": "0.00001",
            },
        ],
        "permissions": ["SPOT"],
        "permissionSets": [["SPOT"]],
    }


class FakeBinance(JsonServer):
    API_ROOT = "/api/v3"

    def __init__(self, frames: dict[str, pl.DataFrame]) -> None:
        self.frames = {s: df.sort("timestamp") for s, df in frames.items()}
        self.fail_next: deque[int] = deque()
        self.fail_from: int | None = None  # every kline request from this index on gets a 500
        self.corrupt: dict[tuple[str, int], dict[str, float]] = {}
        self.visible_until: int | None = None
        self.kline_requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        super().__init__()

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, object]:
        if path == "/api/v3/exchangeInfo":
            return 200, {
                "timezone": "UTC",
                "serverTime": 0,
                "rateLimits": [],
                "exchangeFilters": [],
                "symbols": [_market(s) for s in self.frames],
            }
        if path == "/api/v3/klines":
            return self.klines(query)
        return 404, {"code": -1, "msg": f"no route {path}"}

    def klines(self, query: dict[str, str]) -> tuple[int, object]:
        with self._lock:
            self.kline_requests.append(query)
            if self.fail_from is not None and len(self.kline_requests) > self.fail_from:
                return 500, {"code": -1000, "msg": "injected outage"}
            if self.fail_next:
                status = self.fail_next.popleft()
                return status, {
                    "code": -1003 if status == 429 else -1000,
                    "msg": f"injected {status}",
                }
        symbol = query.get("symbol", "")
        if symbol not in self.frames:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        tf = TF_MS[query.get("interval", "15m")]
        limit = min(int(query.get("limit", 500)), 1000)
        lf = self.frames[symbol].lazy()
        if "startTime" in query:
            lf = lf.filter(pl.col("timestamp") >= int(query["startTime"]))
        if "endTime" in query:
            lf = lf.filter(pl.col("timestamp") <= int(query["endTime"]))
        if self.visible_until is not None:
            lf = lf.filter(pl.col("timestamp") <= self.visible_until)
        rows = []
        for ts, o, h, lo, c, v in (
            lf.head(limit)
            .collect()
            .select("timestamp", "open", "high", "low", "close", "volume")
            .iter_rows()
        ):
            bar = {"open": o, "high": h, "low": lo, "close": c, "volume": v}
            bar.update(self.corrupt.get((symbol, ts), {}))
            rows.append(
                [
                    ts,
                    *(repr(float(bar[k])) for k in ("open", "high", "low", "close", "volume")),
                    ts + tf - 1,
                    "0",
                    100,
                    "0",
                    "0",
                    "0",
                ]
            )
        return 200, rows
