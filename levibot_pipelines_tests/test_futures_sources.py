"""The futures sources: the shared files (layout and clear errors) and ccxt against a local
Binance USDT-M-shaped HTTP server (``/fapi/v1/exchangeInfo``, ``fundingRate``,
``markPriceKlines``), so ccxt's ``binanceusdm`` runs unmodified."""

from __future__ import annotations

from collections import deque

import ccxt
import polars as pl
import pytest

from levibot_pipelines.adapters.futures_sources import (
    CcxtFuturesSource,
    FuturesFilesSource,
    futures_source,
    load_futures,
)
from levibot_pipelines_tests.conftest import SHARED_DATA
from levibot_pipelines_tests.fake_exchange import JsonServer

FUTURES_DIR = SHARED_DATA / "futures"
H = 3_600_000
T0 = 1_680_307_200_000  # 2023-04-01 00:00 UTC


def _perpetual(symbol: str) -> dict:
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "baseAsset": symbol[:-4],
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.1",
                "maxPrice": "1000000",
                "tickSize": "0.1",
            },
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
        ],
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": ["GTC"],
    }


class FakeBinanceFutures(JsonServer):
    """In-memory funding settlements and mark bars behind Binance's USDT-M public API. Funding
    times are served ``late_ms`` after the grid, as Binance does; ``fail_next`` queues HTTP
    statuses for the next data requests; ``requests`` records (path, query) of each."""

    API_ROOT = "/fapi/v1"

    def __init__(self, funding: dict[str, pl.DataFrame], mark: dict[str, pl.DataFrame]) -> None:
        self.funding, self.mark = funding, mark
        self.late_ms = 7
        self.fail_next: deque[int] = deque()
        self.requests: list[tuple[str, dict]] = []
        super().__init__()

    def answer(self, path: str, q: dict) -> tuple[int, object]:
        if path == "/fapi/v1/exchangeInfo":
            symbols = sorted(set(self.funding) | set(self.mark))
            return 200, {
                "timezone": "UTC",
                "serverTime": 0,
                "rateLimits": [],
                "symbols": [_perpetual(s) for s in symbols],
            }
        self.requests.append((path, q))
        if self.fail_next:
            status = self.fail_next.popleft()
            return status, {"code": -1003 if status == 429 else -1000, "msg": f"injected {status}"}
        frames = self.funding if path == "/fapi/v1/fundingRate" else self.mark
        if q.get("symbol") not in frames:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        df = frames[q["symbol"]]
        late = self.late_ms if path == "/fapi/v1/fundingRate" else 0
        if "startTime" in q:  # Binance compares its raw (late) times with the query
            df = df.filter(pl.col("timestamp") + late >= int(q["startTime"]))
        if "endTime" in q:
            df = df.filter(pl.col("timestamp") + late <= int(q["endTime"]))
        df = df.head(min(int(q.get("limit", 100)), 1000))
        if path == "/fapi/v1/fundingRate":
            return 200, [
                {
                    "symbol": q["symbol"],
                    "fundingTime": ts + self.late_ms,
                    "fundingRate": f"{rate:.8f}",
                    "markPrice": "1.0",
                }
                for ts, rate in df.select("timestamp", "funding_rate").iter_rows()
            ]
        return 200, [
            [ts, repr(o), repr(h), repr(lo), repr(c), "0", ts + H - 1, "0", 60, "0", "0", "0"]
            for ts, o, h, lo, c in df.select(
                "timestamp", "open", "high", "low", "close"
            ).iter_rows()
        ]


# --- files --------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_shared_files_load_in_full():
    src = FuturesFilesSource(FUTURES_DIR)
    end = T0 + 800 * 24 * H
    f, m = src.funding("BTCUSDT", T0, end), src.mark("SOLUSDT", T0, end)
    assert f.columns == ["timestamp", "funding_rate"] and f.height == 2193
    assert f["timestamp"][0] == T0 and f["funding_rate"][0] == pytest.approx(1e-4)
    assert m.columns == ["timestamp", "open", "high", "low", "close"] and m.height == 10_944
    assert src.funding("XRPUSDT", T0, end) is None  # no file: no futures data for it
    window = src.funding("ETHUSDT", T0 + 8 * H, T0 + 24 * H)
    assert window["timestamp"].to_list() == [T0 + 8 * H, T0 + 16 * H, T0 + 24 * H]


def write(tmp_path, name: str, **columns) -> None:
    pl.DataFrame(columns).write_parquet(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "columns", "match"),
    [
        (
            "BTCUSDT-funding-8h.parquet",
            {"timestamp": [T0, T0 + 8 * H], "funding_rate": [1e-4, float("nan")]},
            rf"BTCUSDT-funding-8h.parquet: funding_rate nan at timestamp {T0 + 8 * H}",
        ),
        (
            "BTCUSDT-funding-8h.parquet",
            {"timestamp": [T0], "funding_rate": [0.01 * 100]},  # 1.0: a percent, not a fraction
            r"funding_rate 1.0 at timestamp .* not a finite fraction",
        ),
        (
            "BTCUSDT-funding-8h.parquet",
            {"timestamp": [T0, T0], "funding_rate": [1e-4, 2e-4]},
            rf"timestamp {T0} appears more than once",
        ),
        (
            "BTCUSDT-funding-8h.parquet",
            {"timestamp": [T0 // 1000], "funding_rate": [1e-4]},
            r"funding-8h.parquet looks like seconds \(1680307200\)",
        ),
        (
            "BTCUSDT-funding-8h.parquet",
            {"time": [T0], "funding_rate": [1e-4]},
            r"lacks columns \['timestamp'\]",
        ),
        (
            "BTCUSDT-mark-1h.parquet",
            {
                "timestamp": [T0 + 60_000],
                "open": [1.0],
                "high": [1.0],
                "low": [1.0],
                "close": [1.0],
            },
            rf"mark-1h.parquet: timestamp {T0 + 60_000} is not on the hour grid",
        ),
        (
            "BTCUSDT-mark-1h.parquet",
            {"timestamp": [T0], "open": [1.0], "high": [1.0], "low": [1.0], "close": [-5.0]},
            rf"mark-1h.parquet: close -5.0 at timestamp {T0} is not a finite positive price",
        ),
    ],
)
def test_malformed_files_name_the_file_and_the_value(tmp_path, name, columns, match):
    write(tmp_path, name, **columns)
    src = FuturesFilesSource(tmp_path)
    read = src.funding if "funding" in name else src.mark
    with pytest.raises(ValueError, match=match) as err:
        read("BTCUSDT", 0, 2 * T0)
    assert str(tmp_path) in str(err.value)


def test_unreadable_file_and_missing_directory(tmp_path):
    (tmp_path / "BTCUSDT-mark-1h.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"BTCUSDT-mark-1h.parquet cannot be read as Parquet"):
        FuturesFilesSource(tmp_path).mark("BTCUSDT", 0, T0)
    with pytest.raises(ValueError, match=r"futures directory '/no/such' is not a directory"):
        FuturesFilesSource("/no/such")
    with pytest.raises(ValueError, match=r"no futures data for any of \['ETHUSDT'\]"):
        load_futures(FuturesFilesSource(tmp_path), ["ETHUSDT"], since_ms=0, now_ms=T0)


def test_configured_source():
    assert futures_source(None) is None  # the default: no futures features
    assert isinstance(futures_source(str(FUTURES_DIR.parent)), FuturesFilesSource)
    live = futures_source("ccxt", exchange="binance")
    assert live.exchange_id == "binanceusdm" and live.exchange.enableRateLimit


# --- ccxt against a local Binance USDT-M server ------------------------------------------------


def synthetic_series(n_funding: int, n_mark: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    funding = pl.DataFrame(
        {
            "timestamp": [T0 + k * 8 * H for k in range(n_funding)],
            "funding_rate": [round(1e-4 * ((k % 9) - 3) + 1e-6 * k, 8) for k in range(n_funding)],
        }
    )
    close = [100.0 + 0.25 * (k % 40) for k in range(n_mark)]
    mark = pl.DataFrame(
        {
            "timestamp": [T0 + k * H for k in range(n_mark)],
            "open": close,
            "high": [c + 1 for c in close],
            "low": [c - 1 for c in close],
            "close": close,
        }
    )
    return funding, mark


@pytest.fixture()
def fake():
    funding, mark = synthetic_series(2100, 2300)
    with FakeBinanceFutures({"BTCUSDT": funding}, {"BTCUSDT": mark}) as server:
        server.series = (funding, mark)
        yield server


def source(fake, **kw) -> CcxtFuturesSource:
    return CcxtFuturesSource(api_url=fake.api_url, backoff_s=0.01, **kw)


def test_ccxt_funding_paginates_and_floors_binance_times(fake):
    funding, _ = fake.series
    until = T0 + 2099 * 8 * H + 60_000  # the last settlement is final a few ms after its time
    got = source(fake).funding("BTCUSDT", T0, until)
    assert got.equals(funding)  # every value, times floored back onto the 8 h grid
    starts = [int(q["startTime"]) for p, q in fake.requests]
    # pages of 1000; the next page starts 1 ms after the newest raw (7 ms late) time; an empty
    # page ends the fetch
    last = T0 + 2099 * 8 * H + 8
    assert starts == [T0, T0 + 999 * 8 * H + 8, T0 + 1999 * 8 * H + 8, last]
    assert all(p == "/fapi/v1/fundingRate" and q["limit"] == "1000" for p, q in fake.requests)
    assert {q["endTime"] for _, q in fake.requests} == {str(until)}


def test_ccxt_mark_uses_the_mark_price_klines(fake):
    _, mark = fake.series
    got = source(fake).mark("BTCUSDT", T0 + 5 * H, T0 + 2204 * H)
    assert got.equals(mark.slice(5, 2200))
    assert [p for p, _ in fake.requests] == ["/fapi/v1/markPriceKlines"] * 3
    assert [int(q["startTime"]) for _, q in fake.requests] == [
        T0 + 5 * H,
        T0 + 1005 * H,
        T0 + 2005 * H,
    ]
    assert all(q["interval"] == "1h" for _, q in fake.requests)


def test_ccxt_retries_transient_errors_and_gives_up_in_bounds(fake):
    fake.fail_next.extend([429, 500, 503])
    src = source(fake)
    got = src.funding("BTCUSDT", T0, T0 + 10 * 8 * H)
    # 10, not 11: the settlement at exactly until_ms is paid 7 ms later, so not yet final
    assert src.retries == 3 and got.height == 10
    fake.fail_next.extend([500] * 10)
    before = len(fake.requests)
    with pytest.raises(ccxt.OperationFailed, match="injected 500"):
        source(fake, max_retries=2).mark("BTCUSDT", T0, T0 + 10 * H)
    assert len(fake.requests) - before == 3  # 1 try + 2 retries


def test_ccxt_symbol_without_perpetual_and_load_drops_the_open_mark_bar(fake):
    src = source(fake)
    assert src.funding("DOGEUSDT", T0, T0 + H) is None
    now = T0 + 30 * H + 20 * 60_000  # 30:20: the mark bar opened at 30:00 is still open
    data = load_futures(src, ["BTCUSDT", "DOGEUSDT"], since_ms=T0, now_ms=now)
    assert data.mark["timestamp"].max() == T0 + 29 * H  # complete at 30:00
    assert data.funding["timestamp"].to_list() == [T0, T0 + 8 * H, T0 + 16 * H, T0 + 24 * H]
    assert data.symbols() == ["BTCUSDT"]
