import math

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from levibot_pipelines.core.data.features import FEATURE_COLUMNS, FEATURE_SCHEMA, build_features
from levibot_pipelines_tests.conftest import TF_MS, synthetic_long


def flat_then_jump() -> pl.DataFrame:
    """21 bars: BTC at 100 then 110 on the last bar; ETH flat at 50; SOL flat at 10."""
    rows = []
    for i in range(21):
        for sym, close in (
            ("BTCUSDT", 110.0 if i == 20 else 100.0),
            ("ETHUSDT", 50.0),
            ("SOLUSDT", 10.0),
        ):
            rows.append((sym, i * TF_MS, close * 1.01, close * 0.99, close))
    return pl.DataFrame(rows, schema=["symbol", "timestamp", "high", "low", "close"], orient="row")


def test_hand_computed_values():
    out = build_features(flat_then_jump(), tf_ms=TF_MS, horizon=1, warmup=21)
    assert out.height == 3  # only the 21st bar survives a 21-bar warm-up
    btc = out.filter(pl.col("symbol") == "BTCUSDT").row(0, named=True)
    eth = out.filter(pl.col("symbol") == "ETHUSDT").row(0, named=True)
    log11 = math.log(1.1)
    expected_btc = {
        "ret_1": log11,
        "ema_20": 110 / (100 + 10 * 2 / 21) - 1,  # 0.0896226
        "ema_50": 110 / (100 + 10 * 2 / 51) - 1,
        "ema_200": 110 / (100 + 10 * 2 / 201) - 1,
        "z_20": 9.5 / math.sqrt(5.0),  # mean 100.5, sample std sqrt(5)
        "range": 0.02,
        "vol_20": log11 * math.sqrt(0.05),  # 19 zeros and one log(1.1), ddof=1
        "ratio_BTC_ETH": (49 / 51) * log11,  # log ratio jumps by log 1.1 off a flat EMA
        "ratio_ETH_SOL": 0.0,
        "lead_ret_BTC": log11,
        "ratio_btc_eth_raw": 2.2,
        "ratio_eth_sol_raw": 5.0,
    }
    for col, value in expected_btc.items():
        assert btc[col] == pytest.approx(value, rel=1e-12, abs=1e-15), col
    assert btc["ema_20"] == pytest.approx(0.0896226, abs=1e-7)
    assert btc["z_20"] == pytest.approx(4.2485, abs=1e-4)
    assert btc["vol_20"] == pytest.approx(0.021312, abs=1e-6)
    for col in ("ret_1", "ema_20", "ema_50", "ema_200", "z_20", "vol_20"):
        assert eth[col] == 0.0, col  # flat series; z_20 is 0 when all 20 closes are equal
    assert eth["lead_ret_BTC"] == pytest.approx(log11)
    assert btc["fwd_ret"] is None and btc["y_up"] is None  # t+1 not known yet


def test_schema_sorting_and_no_nan_after_warmup(synthetic_bars):
    out = build_features(synthetic_bars, tf_ms=TF_MS, horizon=1)
    assert dict(out.schema) == FEATURE_SCHEMA
    assert out.height == 3 * (1500 - 199)
    assert out.select(pl.col(FEATURE_COLUMNS).is_null().sum()).sum_horizontal().item() == 0
    assert out.select(pl.col(FEATURE_COLUMNS).is_nan().sum()).sum_horizontal().item() == 0
    assert out.equals(out.sort("symbol", "timestamp"))


def test_truncation_invariance(synthetic_bars):
    """Features at t from data cut at t equal those from the full history: no look-ahead."""
    full = build_features(synthetic_bars, tf_ms=TF_MS, horizon=1)
    timestamps = full["timestamp"].unique().sort()
    for t in (timestamps[0], timestamps[100], timestamps[-200], timestamps[-1]):
        cut = build_features(
            synthetic_bars.filter(pl.col("timestamp") <= t), tf_ms=TF_MS, horizon=1
        )
        at_t = [pl.col("timestamp") == t]
        assert_frame_equal(
            cut.filter(*at_t).select("symbol", *FEATURE_COLUMNS),
            full.filter(*at_t).select("symbol", *FEATURE_COLUMNS),
            rel_tol=1e-12,
            abs_tol=1e-15,
        )


@pytest.mark.parametrize("horizon", [1, 3])
def test_labels_are_aligned_to_t_plus_h(synthetic_bars, horizon):
    out = build_features(synthetic_bars, tf_ms=TF_MS, horizon=horizon)
    bars = synthetic_bars.filter(pl.col("symbol") == "SOLUSDT").sort("timestamp")
    close = dict(zip(bars["timestamp"].to_list(), bars["close"].to_list(), strict=True))
    sol = out.filter(pl.col("symbol") == "SOLUSDT")
    for ts, fwd, up in sol.select("timestamp", "fwd_ret", "y_up").iter_rows():
        ahead = close.get(ts + horizon * TF_MS)
        if ahead is None:
            assert fwd is None and up is None
        else:
            assert fwd == pytest.approx(math.log(ahead / close[ts]), rel=1e-12)
            assert up == int(ahead > close[ts])
    assert sol["fwd_ret"].null_count() == horizon


def test_cross_symbol_alignment(synthetic_bars):
    out = build_features(synthetic_bars, tf_ms=TF_MS, horizon=1)
    by_sym = {s: out.filter(pl.col("symbol") == s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
    assert by_sym["BTCUSDT"]["timestamp"].equals(by_sym["ETHUSDT"]["timestamp"])
    assert by_sym["BTCUSDT"]["timestamp"].equals(by_sym["SOLUSDT"]["timestamp"])
    btc, eth, sol = by_sym["BTCUSDT"], by_sym["ETHUSDT"], by_sym["SOLUSDT"]
    # BTC's own return at t appears as lead_ret_BTC on every symbol's row at t.
    assert np.allclose(eth["lead_ret_BTC"], btc["ret_1"], rtol=0, atol=1e-15)
    assert np.allclose(sol["lead_ret_BTC"], btc["ret_1"], rtol=0, atol=1e-15)
    assert np.allclose(eth["ratio_btc_eth_raw"], btc["close"] / eth["close"], rtol=1e-15)
    assert np.allclose(btc["ratio_eth_sol_raw"], eth["close"] / sol["close"], rtol=1e-15)


def test_gap_restarts_the_warmup_and_is_never_spanned():
    bars = synthetic_long(900)
    hole = (500 * TF_MS, 504 * TF_MS)  # ETH misses 5 bars
    gappy = bars.filter(~((pl.col("symbol") == "ETHUSDT") & pl.col("timestamp").is_between(*hole)))
    out = build_features(gappy, tf_ms=TF_MS, horizon=1)
    ts = out.filter(pl.col("symbol") == "BTCUSDT")["timestamp"]
    before, after = ts.filter(ts < hole[0]), ts.filter(ts > hole[1])
    assert before.max() == 499 * TF_MS
    assert after.min() == 505 * TF_MS + 199 * TF_MS  # a fresh 200-bar warm-up after the gap
    # Rows after the gap are exactly what a history starting after the gap gives.
    tail = build_features(bars.filter(pl.col("timestamp") >= 505 * TF_MS), tf_ms=TF_MS, horizon=1)
    assert_frame_equal(
        out.filter(pl.col("timestamp") > hole[1]).select("symbol", "timestamp", *FEATURE_COLUMNS),
        tail.select("symbol", "timestamp", *FEATURE_COLUMNS),
        rel_tol=1e-12,
    )


def test_bad_inputs_are_named():
    bars = flat_then_jump()
    with pytest.raises(ValueError, match=r"missing \['SOLUSDT'\]"):
        build_features(
            bars.filter(pl.col("symbol") != "SOLUSDT"), tf_ms=TF_MS, horizon=1, warmup=21
        )
    with pytest.raises(ValueError, match="horizon must be >= 1 bar, got 0"):
        build_features(bars, tf_ms=TF_MS, horizon=0)
    with pytest.raises(ValueError, match="warmup must be >= 21"):
        build_features(bars, tf_ms=TF_MS, horizon=1, warmup=5)
    with pytest.raises(ValueError, match=r"lack columns \['close'\]"):
        build_features(bars.drop("close"), tf_ms=TF_MS, horizon=1)
