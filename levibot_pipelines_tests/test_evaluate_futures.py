"""``levibot evaluate --futures-dir``: both models take the perpetual-futures features, and the
report says which features were used and how much each mattered (LightGBM gain share).

The end-to-end run is a seeded market of 2,600 15m bars per symbol whose drift over each 8h
funding interval has the sign of the funding rate settled at its start: the funding rate is
known at the close of the bar before the interval, so ``funding_rate_bps`` predicts the next
bar's direction and LightGBM has to split on it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from levibot_pipelines import cli
from levibot_pipelines.core.data.features import FEATURE_COLUMNS, build_features
from levibot_pipelines.core.data.futures import FUTURES_COLUMNS, FuturesData
from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig, symbol_data
from levibot_pipelines.core.models.transformer import TransformerConfig
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.evaluate import run_evaluate
from levibot_pipelines_tests.conftest import SYMBOLS, TF_MS, synthetic_long

START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC, on the 8h funding grid
HOUR_MS = 3_600_000
N_BARS = 2_600
FUNDING_LEAD_MS = 40 * 24 * HOUR_MS  # funding from 40 days earlier: funding_z is known throughout
ALL_COLUMNS = [*FEATURE_COLUMNS, *FUTURES_COLUMNS]


def _write_market(candles: Path, futures: Path, symbol: str, seed: int) -> None:
    """Candles, funding and mark files of ``symbol`` with the planted funding -> return relation:
    each bar opened in ``[s, s + 8h)`` drifts 10 bps in the direction of the rate settled at
    ``s``, under 20 bps of noise; the mark closes sit 5 +- 2 bps above spot."""
    rng = np.random.default_rng(seed)
    ts = START_MS + np.arange(N_BARS, dtype=np.int64) * TF_MS
    settle = np.arange(START_MS - FUNDING_LEAD_MS, ts[-1] + 1, 8 * HOUR_MS, dtype=np.int64)
    sign = rng.choice([-1.0, 1.0], size=settle.size)
    rate = sign * rng.uniform(0.5e-4, 3e-4, settle.size)
    block = np.searchsorted(settle, ts, side="right") - 1  # the settlement each bar opens after
    close = 100.0 * np.exp(np.cumsum(0.001 * sign[block] + rng.normal(0.0, 0.002, N_BARS)))
    opens = np.r_[100.0, close[:-1]]
    wick = 1.0 + np.abs(rng.normal(0.0, 0.001, N_BARS))
    pl.DataFrame(
        {
            "timestamp": ts,
            "open": opens,
            "high": np.maximum(opens, close) * wick,
            "low": np.minimum(opens, close) / wick,
            "close": close,
            "volume": rng.uniform(10.0, 20.0, N_BARS),
        }
    ).write_parquet(candles / f"{symbol}-15m.parquet")
    pl.DataFrame({"timestamp": settle, "funding_rate": rate}).write_parquet(
        futures / f"{symbol}-funding-8h.parquet"
    )
    first = np.arange(0, N_BARS - 3, 4)  # hourly mark bars; the spot bar 45 min later closes
    mark = close[first + 3] * np.exp(rng.normal(5e-4, 2e-4, first.size))  # with them
    pl.DataFrame(
        {"timestamp": ts[first], "open": mark, "high": mark * 1.001, "low": mark / 1.001}
        | {"close": mark}
    ).write_parquet(futures / f"{symbol}-mark-1h.parquet")


@pytest.fixture
def market(tmp_path) -> tuple[Path, Path]:
    candles, futures = tmp_path / "candles", tmp_path / "futures"
    candles.mkdir()
    futures.mkdir()
    for i, symbol in enumerate(SYMBOLS):
        _write_market(candles, futures, symbol, seed=10 + i)
    return candles, futures


BUDGET = ["--walk", "900,250,250,300", "--purge", "40", "--profile", "small", "--epochs", "1",
          "--mc-samples", "4", "--max-train-samples", "400"]  # fmt: skip


def _argv(candles: Path, futures: Path, out: Path) -> list[str]:
    paths = ["--files-dir", str(candles), "--futures-dir", str(futures), "--out", str(out)]
    return ["evaluate", "--source", "files", "--symbols", ",".join(SYMBOLS), *paths, *BUDGET]


def test_futures_dir_needs_the_files_source(tmp_path, capsys):
    argv = ["evaluate", "--source", "synthetic", "--futures-dir", str(tmp_path), "--out"]
    assert cli.main([*argv, str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"levibot: --futures-dir='{tmp_path}' joins recorded futures data onto recorded candles: "
        "it needs --source files, got --source synthetic"
    )
    assert not (tmp_path / "out").exists()


def test_a_missing_funding_file_is_named_before_any_work(market, tmp_path, capsys):
    candles, futures = market
    (futures / "ETHUSDT-funding-8h.parquet").unlink()
    assert cli.main(_argv(candles, futures, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"{futures / 'ETHUSDT-funding-8h.parquet'} does not exist" in err
    assert not (tmp_path / "out").exists()


def test_a_bad_column_names_the_file(market, tmp_path, capsys):
    candles, futures = market
    path = futures / "SOLUSDT-mark-1h.parquet"
    pl.read_parquet(path).rename({"close": "last"}).write_parquet(path)
    assert cli.main(_argv(candles, futures, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"{path} lacks columns ['close']" in err


def test_the_transformer_width_must_match_the_columns(market, tmp_path):
    candles, futures = market
    settings = Settings.from_env(
        {
            "LEVIBOT_SOURCE": "files",
            "LEVIBOT_FILES_DIR": str(candles),
            "LEVIBOT_HOME": str(tmp_path / "home"),
        }
    )
    cfg = EvalConfig(
        transformer=TransformerConfig(),  # 10 inputs
        walk=WalkForwardConfig(train=900, val=250, calib=250, test=300, purge=20),
        horizon=1,
        epochs=1,
        mc_samples=4,
    )
    with pytest.raises(ValueError, match=r"n_features=10, but the models take 15 feature"):
        run_evaluate(settings, tmp_path / "out", cfg, "small", futures_dir=futures)


def test_evaluate_trains_on_the_futures_features_and_reports_importances(market, tmp_path):
    candles, futures = market
    out = tmp_path / "out"
    assert cli.main(_argv(candles, futures, out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["config"]["transformer"]["n_features"] == 15
    md = (out / "report.md").read_text()
    for symbol, rep in report["symbols"].items():
        assert rep["feature_columns"] == ALL_COLUMNS, symbol
        share = rep["feature_importance"]
        assert list(share) == ALL_COLUMNS, symbol
        assert sum(share.values()) == pytest.approx(1.0, abs=1e-9), symbol
        assert min(share.values()) >= 0.0, symbol
        # The planted relation: the funding rate decides the next bar's drift.
        # Measured: 0.51 / 0.53 / 0.56 of the gain, the largest share for every symbol.
        assert share["funding_rate_bps"] > 0.3, (symbol, share)
        assert max(share, key=share.__getitem__) == "funding_rate_bps", (symbol, share)
        assert rep["models"]["lgbm"]["auc"] > 0.6, symbol
    assert md.count("| feature | gain share |") == 3
    assert "| funding_rate_bps |" in md


def _futures_for(bars: pl.DataFrame, *, from_ms: int) -> FuturesData:
    """Funding settlements (8h) and mark bars (1h) of every symbol from ``from_ms`` on."""
    end = int(bars.get_column("timestamp").max())
    settle = np.arange(from_ms, end, 8 * HOUR_MS, dtype=np.int64)
    hours = np.arange(from_ms, end, HOUR_MS, dtype=np.int64)
    funding, mark = [], []
    for symbol in SYMBOLS:
        funding.append(pl.DataFrame({"symbol": symbol, "timestamp": settle, "funding_rate": 1e-4}))
        closes = bars.filter(pl.col("symbol") == symbol).select("timestamp", "close")
        mark.append(
            pl.DataFrame({"symbol": symbol, "timestamp": hours}).join(
                closes.with_columns(pl.col("timestamp") - (HOUR_MS - TF_MS)), on="timestamp"
            )
        )
    return FuturesData(funding=pl.concat(funding), mark=pl.concat(mark))


def test_symbol_data_takes_the_columns_and_the_deep_input_has_no_nan():
    bars = synthetic_long(1500, start_ms=START_MS)
    # Futures data from the 1000th bar on: the rows before have null futures features.
    futures = _futures_for(bars, from_ms=START_MS + 1000 * TF_MS)
    features = build_features(bars, tf_ms=TF_MS, horizon=1, futures=futures)

    base = symbol_data(features, "ETHUSDT")
    assert base.X.shape == (1301, 10) and base.columns == FEATURE_COLUMNS
    assert base.X_deep is base.X  # the production input, untouched

    data = symbol_data(features, "ETHUSDT", ALL_COLUMNS)
    assert data.X.shape == (1301, 15) and data.columns == tuple(ALL_COLUMNS)
    np.testing.assert_array_equal(data.X[:, :10], base.X)
    fut = data.X[:, 10:]
    # Funding settled by the bar's close: bars closing before the first settlement have none
    # (NaN for LightGBM, no row dropped); funding_z never has its 90 settlements here.
    before = data.timestamps + TF_MS < START_MS + 1000 * TF_MS
    assert before.sum() == 800
    np.testing.assert_array_equal(np.isnan(fut[:, 0]), before)
    assert np.isnan(fut[:, 2]).all()
    deep = data.X_deep
    assert deep.shape == data.X.shape and np.isfinite(deep).all()
    np.testing.assert_array_equal(deep[:, 10:], np.nan_to_num(fut, nan=0.0))
    # Known futures values reach both models unchanged: 1 bp of funding, a basis of 0.
    last = data.X[-1, 10:]
    assert last[0] == pytest.approx(1.0) and last[4] == pytest.approx(0.0, abs=1e-6)

    with pytest.raises(ValueError, match=r"lacks columns \['funding_rate_bps'\]"):
        symbol_data(features.drop("funding_rate_bps"), "ETHUSDT", ALL_COLUMNS)
    with pytest.raises(ValueError, match=r"expected \(n, 15\)"):
        replace(data, X=base.X)
