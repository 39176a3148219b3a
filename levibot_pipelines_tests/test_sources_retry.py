"""The ccxt source is the one layer that retries an exchange, within two bounds per fetch: at most
``max_retries + 1`` attempts per request and ``retry_seconds`` spent failing. Real ccxt against
local servers: the Binance-shaped fake in an outage, and a socket that never answers."""

import socket
import threading
import time

import ccxt
import pytest

from levibot_pipelines.adapters.sources import CcxtSource
from levibot_pipelines.core.data.synthetic import simulate_bars
from levibot_pipelines_tests.conftest import TF_MS
from levibot_pipelines_tests.fake_exchange import FakeBinance

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
N = 50


@pytest.fixture()
def exchange():
    bars = simulate_bars("BTCUSDT", START, START + (N - 1) * TF_MS, TF_MS, seed=7)
    with FakeBinance({"BTCUSDT": bars}) as fake:
        yield fake


def fetch(source: CcxtSource) -> float:
    """Run one fetch of every bar; the seconds it took before it raised."""
    started = time.monotonic()
    with pytest.raises(ccxt.OperationFailed):
        list(source.pages("BTCUSDT", START, START + (N - 1) * TF_MS))
    return time.monotonic() - started


def test_an_outage_stops_after_the_attempt_bound(exchange):
    exchange.fail_from = 0  # every kline request gets a 500
    source = CcxtSource("binance", timeframe="15m", api_url=exchange.api_url, backoff_s=0.01)
    fetch(source)
    assert len(exchange.kline_requests) == 6  # 1 try + max_retries=5, the default
    assert source.retries == 5
    # The next fetch (the next tick) has its own budget and the same bound.
    exchange.kline_requests.clear()
    fetch(source)
    assert len(exchange.kline_requests) == 6


def test_an_outage_stops_within_the_time_budget(exchange):
    """backoff 0.1 s doubling, budget 2.2 s: sleeps 0.1, 0.2, 0.4, 0.8 (1.5 s in all) leave 0.7 s
    (>= MIN_ATTEMPT_S 0.5) before the 4th retry; the 5th would sleep 1.6 s more, past the
    budget, so the fetch gives up after 5 attempts of the 101 allowed, about 1.5 s in."""
    exchange.fail_from = 0
    source = CcxtSource(
        "binance",
        timeframe="15m",
        api_url=exchange.api_url,
        backoff_s=0.1,
        max_retries=100,
        retry_seconds=2.2,
    )
    elapsed = fetch(source)
    assert len(exchange.kline_requests) == 5
    assert 1.5 <= elapsed < 2.2
    assert source.failing_s <= 2.2


class Silent:
    """A TCP server that accepts connections and never answers: a hanging exchange."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/api/v3"

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_a_hanging_exchange_is_given_up_on_within_the_budget():
    """The request timeout (10 s) is cut to the 1.5 s budget; after that one attempt less than
    MIN_ATTEMPT_S is left, so there is no retry (without the budget: 6 x 10 s + 15.5 s of
    backoff)."""
    silent = Silent()
    try:
        source = CcxtSource("binance", timeframe="15m", api_url=silent.api_url, retry_seconds=1.5)
        started = time.monotonic()
        with pytest.raises(ccxt.RequestTimeout):
            list(source.pages("BTCUSDT", START, START + TF_MS))
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert 1.4 <= elapsed < 2.5
    assert len(silent.accepted) == 1 and source.retries == 0


def test_transient_errors_are_retried_within_the_bounds(exchange):
    exchange.fail_next.extend([429, 503])
    source = CcxtSource("binance", timeframe="15m", api_url=exchange.api_url, backoff_s=0.01)
    pages = list(source.pages("BTCUSDT", START, START + (N - 1) * TF_MS))
    assert sum(p.height for p in pages) == N
    assert source.retries == 2 and len(exchange.kline_requests) == 3


def test_bad_retry_settings_are_clear_errors():
    with pytest.raises(ValueError, match="retry_seconds must be > 0 seconds, got 0"):
        CcxtSource("binance", timeframe="15m", retry_seconds=0)
    with pytest.raises(ValueError, match="max_retries must be >= 0, got -1"):
        CcxtSource("binance", timeframe="15m", max_retries=-1)
