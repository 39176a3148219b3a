"""Funding and basis features: hand-computed values, no look-ahead (truncation at every kind of
boundary), the opt-in join into the feature table, and the real shared files."""

from __future__ import annotations

import math

import polars as pl
import pytest

from levibot_pipelines.core.data.features import FEATURE_SCHEMA, build_features
from levibot_pipelines.core.data.futures import (
    FUTURES_COLUMNS,
    FuturesData,
    basis_features,
    funding_features,
    futures_features,
)
from levibot_pipelines_tests.conftest import SHARED_DATA, SYMBOLS, synthetic_long

TF = 900_000  # 15m
H = 3_600_000
T0 = 1_680_307_200_000  # 2023-04-01 00:00 UTC, a funding time


def spot_bars(n: int, close=lambda i: 100.0, symbol: str = "BTCUSDT") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "timestamp": [T0 + i * TF for i in range(n)],
            "close": [float(close(i)) for i in range(n)],
        }
    )


def at(df: pl.DataFrame, open_ms: int, col: str):
    return df.filter(pl.col("timestamp") == open_ms).get_column(col).item()


# Settlements every 8 h from T0, in bps: 1, 1, 1, 1, 1, 13 (the sixth at T0 + 40 h).
RATES_BPS = [1.0, 1.0, 1.0, 1.0, 1.0, 13.0]
FUNDING = pl.DataFrame(
    {
        "symbol": ["BTCUSDT"] * 6,
        "timestamp": [T0 + k * 8 * H for k in range(6)],
        "funding_rate": [r / 1e4 for r in RATES_BPS],
    }
)


def test_funding_by_hand():
    out = funding_features(spot_bars(220), FUNDING, tf_ms=TF, z_window=6)
    # Bar opened at T0 closes at T0 + 15m: the T0 settlement (1 bp) is known, no previous one.
    assert at(out, T0, "funding_rate_bps") == pytest.approx(1.0)
    assert at(out, T0, "funding_change_bps") is None
    # Bar opened at 39:30 closes at 39:45: the sixth settlement (T0 + 40 h) is not known yet;
    # the fifth is, with change 1 - 1 = 0; only 5 settlements < window 6, so no z.
    before = T0 + 40 * H - 2 * TF
    assert at(out, before, "funding_rate_bps") == pytest.approx(1.0)
    assert at(out, before, "funding_change_bps") == pytest.approx(0.0)
    assert at(out, before, "funding_z") is None and at(out, before, "funding_extreme") is None
    # Bar opened at 39:45 CLOSES at 40:00 = the settlement: 13 bp, change 13 - 1 = 12.
    # z over (1,1,1,1,1,13): mean 3, sample var (5 * 2^2 + 10^2) / 5 = 24, z = 10 / sqrt(24)
    # = 2.0412 >= 2, so extreme = +1.
    edge = T0 + 40 * H - TF
    assert at(out, edge, "funding_rate_bps") == pytest.approx(13.0)
    assert at(out, edge, "funding_change_bps") == pytest.approx(12.0)
    assert at(out, edge, "funding_z") == pytest.approx(10 / math.sqrt(24))
    assert at(out, edge, "funding_extreme") == 1.0
    # Stale after 9 h: the bar closing at 49:00 still uses it, the one closing at 49:15 not.
    assert at(out, T0 + 49 * H - TF, "funding_rate_bps") == pytest.approx(13.0)
    assert at(out, T0 + 49 * H, "funding_rate_bps") is None


def test_funding_z_has_a_std_floor():
    # Window 3 over (1, 1, 1.3) bps: mean 1.1, sample std sqrt((2 * 0.01 + 0.04) / 2) = 0.173
    # < 0.5 bp floor, so z = (1.3 - 1.1) / 0.5 = 0.4 (not 1.15); over (1, 1, 1): std 0 -> z 0.
    f = FUNDING.head(3).with_columns(funding_rate=pl.Series([1e-4, 1e-4, 1.3e-4]))
    out = funding_features(spot_bars(80), f, tf_ms=TF, z_window=3)
    assert at(out, T0 + 16 * H - TF, "funding_z") == pytest.approx(0.4)
    flat = funding_features(spot_bars(80), FUNDING.head(3), tf_ms=TF, z_window=3)
    assert at(flat, T0 + 16 * H - TF, "funding_z") == 0.0
    assert at(flat, T0 + 16 * H - TF, "funding_extreme") == 0.0


MARK = pl.DataFrame(
    {
        "symbol": ["BTCUSDT"] * 3,
        "timestamp": [T0, T0 + H, T0 + 2 * H],
        "close": [100.2, 100.5, 101.0],
    }
)


def test_basis_by_hand_uses_the_last_complete_mark_bar_at_the_same_instant():
    # Spot closes 100 everywhere except the bar opened at 02:00 (close 200 at 02:15).
    spot = spot_bars(16, close=lambda i: 200.0 if i == 8 else 100.0)
    out = basis_features(spot, MARK, tf_ms=TF)
    # Bars closing before 01:00 have no complete mark bar.
    assert at(out, T0 + 2 * TF, "basis_bps") is None
    # Bar opened 00:45 closes 01:00: mark bar 00:00 (complete at 01:00), 1e4 * log(100.2 / 100)
    # = 19.980 bps, against the spot close at 01:00 (that same bar's close, 100).
    assert at(out, T0 + 3 * TF, "basis_bps") == pytest.approx(1e4 * math.log(1.002))
    # Bar opened 01:45 closes 02:00: mark bar 01:00, log(100.5 / 100) = 49.875 bps.
    assert at(out, T0 + 7 * TF, "basis_bps") == pytest.approx(1e4 * math.log(1.005))
    # Bar opened 02:00 closes 02:15: mark bar 02:00 is NOT complete (it is at 03:00), so still
    # mark 01:00 vs spot at 02:00: 49.875 bps, not log(100.5 / 200) (its own spot close).
    assert at(out, T0 + 8 * TF, "basis_bps") == pytest.approx(1e4 * math.log(1.005))
    # Bar opened 02:45 closes 03:00: mark bar 02:00 completes: log(101 / 100) = 99.50 bps.
    assert at(out, T0 + 11 * TF, "basis_bps") == pytest.approx(1e4 * math.log(1.01))
    # 2 h after the last mark bar completed (05:00 > 03:00 + 2 h is stale): null.
    assert at(out, T0 + 15 * TF, "basis_bps") == pytest.approx(1e4 * math.log(1.01))  # 04:00
    longer = basis_features(spot_bars(24), MARK, tf_ms=TF)
    assert at(longer, T0 + 19 * TF, "basis_bps") == pytest.approx(1e4 * math.log(1.01))  # 05:00
    assert at(longer, T0 + 20 * TF, "basis_bps") is None  # closes 05:15


def test_duplicate_settlements_are_named():
    dup = pl.concat([FUNDING, FUNDING.head(1)])
    with pytest.raises(ValueError, match=rf"duplicate rows for symbol 'BTCUSDT' at timestamp {T0}"):
        funding_features(spot_bars(4), dup, tf_ms=TF)


# --- no look-ahead: cut every input to what is known at the close c of bar t -----------------


def known_at(spot: pl.DataFrame, data: FuturesData, t: int) -> tuple[pl.DataFrame, FuturesData]:
    """Spot bars opened <= t, settlements at <= c, mark bars complete at c (open <= c - 1 h)."""
    c = t + TF
    return spot.filter(pl.col("timestamp") <= t), FuturesData(
        funding=data.funding.filter(pl.col("timestamp") <= c),
        mark=data.mark.filter(pl.col("timestamp") + H <= c),
    )


@pytest.fixture(scope="module")
def synthetic_futures() -> tuple[pl.DataFrame, FuturesData]:
    """25 days of synthetic spot for the three symbols; a funding and mark series derived from
    it (mark = spot close at the hour * (1 + a wandering basis)), so every value differs."""
    spot = synthetic_long(2400, start_ms=T0).select("symbol", "timestamp", "close")
    mark = (
        spot.filter((pl.col("timestamp") + TF) % H == 0)
        .with_columns(timestamp=pl.col("timestamp") + TF - H)
        .with_columns(close=pl.col("close") * (1 + 1e-4 * (pl.int_range(pl.len()) % 17 - 8)))
    )
    funding = (
        spot.filter(pl.col("timestamp") % (8 * H) == 0)
        .with_columns(funding_rate=1e-4 * (pl.int_range(pl.len()) % 7 - 2).cast(pl.Float64))
        .select("symbol", "timestamp", "funding_rate")
    )
    return spot, FuturesData(funding=funding, mark=mark.select("symbol", "timestamp", "close"))


# Cut points: a bar just before a settlement, the one closing on it, on the hour, mid-hour,
# late in the series, where a 30-settlement (10-day) z-window is full.
CUTS = [T0 + k for k in (8 * H - 2 * TF, 8 * H - TF, 8 * H, 20 * H - TF, 20 * H + 2 * TF)] + [
    T0 + 24 * 24 * H - TF,
    T0 + 24 * 24 * H + TF,
]


@pytest.mark.parametrize("column", FUTURES_COLUMNS)
def test_no_look_ahead(synthetic_futures, column):
    spot, data = synthetic_futures
    full = funding_features(spot, data.funding, tf_ms=TF, z_window=30).join(
        basis_features(spot, data.mark, tf_ms=TF), on=["symbol", "timestamp"]
    )
    non_null = 0
    for t in CUTS:
        cut_spot, cut = known_at(spot, data, t)
        part = funding_features(cut_spot, cut.funding, tf_ms=TF, z_window=30).join(
            basis_features(cut_spot, cut.mark, tf_ms=TF), on=["symbol", "timestamp"]
        )
        want = full.filter(pl.col("timestamp") == t).select("symbol", column).sort("symbol")
        got = part.filter(pl.col("timestamp") == t).select("symbol", column).sort("symbol")
        assert got.equals(want), (t, got, want)
        non_null += want.get_column(column).is_not_null().sum()
    assert non_null >= 3 * 2  # values, not nulls: z (10-day window) exists at the last 2 cuts


def test_a_change_after_t_never_moves_t(synthetic_futures):
    # The complementary check: garble everything NOT known at c; nothing at t moves.
    spot, data = synthetic_futures
    t = T0 + 20 * H + 2 * TF  # closes 20:45; mark bar 20:00 is incomplete, settlement 24:00 ahead
    c = t + TF
    garbled = FuturesData(
        funding=data.funding.with_columns(
            funding_rate=pl.when(pl.col("timestamp") > c).then(0.05).otherwise("funding_rate")
        ),
        mark=data.mark.with_columns(
            close=pl.when(pl.col("timestamp") + H > c).then(1.0).otherwise("close")
        ),
    )
    a = futures_features(spot, data, tf_ms=TF).filter(pl.col("timestamp") == t)
    b = futures_features(spot, garbled, tf_ms=TF).filter(pl.col("timestamp") == t)
    assert a.equals(b)
    later = futures_features(spot, garbled, tf_ms=TF).filter(pl.col("timestamp") == t + 4 * TF)
    assert (later.get_column("basis_bps").abs() > 1000).all()  # the garbled bar is used later


# --- the opt-in join into the feature table -------------------------------------------------


def test_build_features_is_unchanged_without_futures_and_adds_columns_with(synthetic_futures):
    spot, data = synthetic_futures
    bars = synthetic_long(2400, start_ms=T0)
    plain = build_features(bars, tf_ms=TF, horizon=1)
    assert dict(plain.schema) == FEATURE_SCHEMA
    only_btc_eth = FuturesData(
        funding=data.funding.filter(pl.col("symbol") != "SOLUSDT"),
        mark=data.mark.filter(pl.col("symbol") != "SOLUSDT"),
    )
    with_f = build_features(bars, tf_ms=TF, horizon=1, futures=only_btc_eth)
    assert with_f.columns == [*FEATURE_SCHEMA, *FUTURES_COLUMNS]
    assert with_f.select(list(FEATURE_SCHEMA)).equals(plain)  # every other number unchanged
    per_symbol = (
        with_f.group_by("symbol").agg(pl.col("funding_rate_bps").null_count()).sort("symbol")
    )
    n = with_f.filter(pl.col("symbol") == "SOLUSDT").height
    assert per_symbol.get_column("funding_rate_bps").to_list() == [0, 0, n]  # SOL: no data
    expected = futures_features(spot, only_btc_eth, tf_ms=TF)
    assert with_f.select("symbol", "timestamp", *FUTURES_COLUMNS).equals(
        expected.join(plain.select("symbol", "timestamp"), on=["symbol", "timestamp"], how="semi")
    )


# --- the real shared files --------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_files_give_sensible_values(real_candles):
    from levibot_pipelines.adapters.futures_sources import FuturesFilesSource, load_futures

    last = real_candles["BTCUSDT"].get_column("timestamp").max() + TF
    data = load_futures(
        FuturesFilesSource(SHARED_DATA / "futures"), SYMBOLS, since_ms=T0, now_ms=last
    )
    spot = pl.concat(
        [
            real_candles[s].select("timestamp", "close").with_columns(symbol=pl.lit(s))
            for s in SYMBOLS
        ]
    )
    out = futures_features(spot, data, tf_ms=TF)
    assert out.height == 3 * 70_176
    rate = out.get_column("funding_rate_bps").drop_nulls()
    assert rate.len() == out.height  # a settlement at 2023-04-01 00:00, none stale
    assert (rate.abs() <= 30).all()  # within +-0.3% per 8 h
    assert ((rate > -1) & (rate < 3)).mean() > 0.85  # mostly near Binance's 1 bp default
    basis = out.get_column("basis_bps")
    sol_2023 = out.filter(
        (pl.col("symbol") == "SOLUSDT") & (pl.col("timestamp") < 1_704_067_200_000)
    )
    assert sol_2023.get_column("basis_bps").is_null().all()  # no SOL mark bars before 2024
    b = basis.drop_nulls()
    assert b.len() == out.height - sol_2023.height - 3 * 3  # + the first 3 bars of each symbol
    assert (b.abs() < 60).all() and b.abs().median() < 10  # a few bps, at most tens
    z = out.get_column("funding_z").drop_nulls()
    assert z.is_finite().all() and z.abs().max() < 15
