"""ccxt end to end against a local Binance-shaped server serving the real candles."""

import ccxt
import pytest

from levibot_pipelines.adapters.sources import CcxtSource
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.usecases.ingest import ingest_symbol
from levibot_pipelines_tests.conftest import TF_MS
from levibot_pipelines_tests.fake_exchange import FakeBinance

pytestmark = pytest.mark.shared_data
N = 2500


@pytest.fixture()
def exchange(real_candles):
    frames = {s: real_candles[s].head(N) for s in ("BTCUSDT", "ETHUSDT")}
    with FakeBinance(frames) as fake:
        yield fake


@pytest.fixture()
def ts(real_candles) -> list[int]:
    return real_candles["BTCUSDT"]["timestamp"].head(N).to_list()


def ingest(exchange, store, ts, now_ms, symbol="BTCUSDT", **kwargs):
    source = CcxtSource(
        "binance", timeframe="15m", api_url=exchange.api_url, backoff_s=0.01, **kwargs
    )
    return source, ingest_symbol(source, store, symbol, start_ms=ts[0], now_ms=now_ms, tf_ms=TF_MS)


def test_paginates_and_drops_the_open_bar(exchange, store_dir, ts, real_candles):
    now = ts[-1] + 7 * 60_000  # the last served bar is still open
    _, report = ingest(exchange, ParquetStore(store_dir), ts, now)
    assert [int(q["startTime"]) for q in exchange.kline_requests] == [ts[0], ts[1000], ts[2000]]
    assert all(q["limit"] == "1000" and q["interval"] == "15m" for q in exchange.kline_requests)
    assert (report.fetched, report.rows_added, report.total_rows) == (N - 1, N - 1, N - 1)
    assert report.last_bar == ts[-2] and report.rejected == {} and report.gaps == 0
    stored = ParquetStore(store_dir).read_ohlcv("BTCUSDT")
    expected = real_candles["BTCUSDT"].head(N - 1)
    assert stored.select(expected.columns).equals(expected)  # bit-identical values
    assert stored["source"].unique().to_list() == ["ccxt"]


def test_retries_transient_errors(exchange, store_dir, ts):
    exchange.fail_next.extend([429, 500, 503])
    source, report = ingest(exchange, ParquetStore(store_dir), ts, ts[-1] + TF_MS)
    assert source.retries == 3
    assert report.total_rows == N
    assert len(exchange.kline_requests) == 3 + 3


def test_retries_are_bounded_and_fetched_pages_are_kept(exchange, store_dir, ts):
    exchange.fail_from = 1  # the first page arrives, then the exchange goes down
    store = ParquetStore(store_dir)
    with pytest.raises(ccxt.OperationFailed, match="injected outage"):
        ingest(exchange, store, ts, ts[-1] + TF_MS, max_retries=2)
    assert len(exchange.kline_requests) == 1 + 3  # first page, then 1 try + 2 retries
    assert store.read_ohlcv("BTCUSDT")["timestamp"].to_list() == ts[:1000]
    exchange.fail_from = None
    _, report = ingest(exchange, store, ts, ts[-1] + TF_MS)  # resumes where it stopped
    assert int(exchange.kline_requests[-2]["startTime"]) == ts[1000]
    assert (report.rows_added, report.total_rows) == (N - 1000, N)


def test_malformed_bar_is_rejected_with_a_count(exchange, store_dir, ts, real_candles):
    bad = real_candles["BTCUSDT"].row(10, named=True)
    exchange.corrupt[("BTCUSDT", ts[10])] = {"high": bad["low"] * 0.5}
    exchange.corrupt[("BTCUSDT", ts[20])] = {"volume": -3.0}
    _, report = ingest(exchange, ParquetStore(store_dir), ts, ts[-1] + TF_MS)
    assert report.rejected == {"high_below_open_close": 1, "negative_volume": 1}
    assert report.total_rows == N - 2
    assert (report.gaps, report.missing_bars) == (2, 2)  # reported, not filled


def test_rerun_is_idempotent_and_incremental_fetches_only_new_bars(exchange, store_dir, ts):
    store = ParquetStore(store_dir)
    exchange.visible_until = ts[1999]
    _, first = ingest(exchange, store, ts, ts[1999] + TF_MS)
    assert first.total_rows == 2000
    before = store.read_ohlcv("BTCUSDT")
    exchange.kline_requests.clear()
    _, again = ingest(exchange, store, ts, ts[1999] + TF_MS)
    assert (again.fetched, again.rows_added) == (0, 0)
    assert exchange.kline_requests == []  # nothing new to ask for
    assert store.read_ohlcv("BTCUSDT").equals(before)
    exchange.visible_until = None
    _, later = ingest(exchange, store, ts, ts[-1] + TF_MS)
    assert [int(q["startTime"]) for q in exchange.kline_requests] == [ts[2000]]
    assert (later.fetched, later.rows_added, later.total_rows) == (N - 2000, N - 2000, N)
    assert store.read_ohlcv("BTCUSDT").head(2000).equals(before)


def test_unknown_symbol_and_exchange_are_clear_errors(exchange, store_dir, ts):
    store = ParquetStore(store_dir)
    with pytest.raises(ValueError, match=r"unknown symbol 'DOGEUSDT' on binance.*'BTCUSDT'"):
        ingest(exchange, store, ts, ts[-1], symbol="DOGEUSDT")
    assert not store.ohlcv_path("DOGEUSDT").exists()
    with pytest.raises(ValueError, match="unknown exchange 'notanexchange'"):
        CcxtSource("notanexchange", timeframe="15m")


@pytest.fixture()
def store_dir(tmp_path):
    return tmp_path / "home"
