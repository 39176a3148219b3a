"""Monitoring use case: feature drift against the champion's training window (or the fallback
before any champion), the ``feature_drift`` check that reports it (green on ordinary data, ERROR
on a shock, in agreement with the kill-switch), and the PASS/WARN/FAIL freshness decision."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.features import FEATURE_COLUMNS, build_features
from levibot_pipelines.core.data.synthetic import MarketParams, simulate_bars
from levibot_pipelines.core.data.timeframes import freshness_state
from levibot_pipelines.core.data.validation import validate_ohlcv
from levibot_pipelines.core.trading.drift import drift_report
from levibot_pipelines.core.trading.killswitch import RiskInputs
from levibot_pipelines.defs.monitoring import feature_drift as feature_drift_check
from levibot_pipelines.defs.resources import ModelResource
from levibot_pipelines.settings import MarketSettings, ModelSettings, Settings, TradingSettings
from levibot_pipelines.usecases.monitor import feature_drift, reference_windows
from levibot_pipelines.usecases.risk import evaluate_kill_switch, risk_limits
from levibot_pipelines_tests.conftest import SYMBOLS, TF_MS, synthetic_long


class FakeTracker:
    """Champions with a training window in their meta.json, for the symbols given."""

    def __init__(self, windows: dict[str, tuple[int, int]]) -> None:
        self.windows = windows

    def champion(self, name: str):
        symbol = next((s for s in self.windows if s in name), None)
        return None if symbol is None else ("7", {})

    def download_file(self, name: str, version: str, path: str) -> bytes:
        assert path == "model/meta.json" and version == "7"
        start, end = next(w for s, w in self.windows.items() if s in name)
        return json.dumps({"train_start_ms": start, "train_end_ms": end}).encode()


def _settings(
    *, drift_window: int, walk=(600, 150, 150, 200), symbols=SYMBOLS, home=Path("/nonexistent")
) -> Settings:
    return Settings(
        home=home,
        market=MarketSettings(symbols=tuple(symbols)),
        models=ModelSettings(walk=walk),
        trading=TradingSettings(drift_window=drift_window, psi_warn=0.1, psi_error=0.25),
    )


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return build_features(synthetic_long(1500), tf_ms=TF_MS, horizon=1)


def test_reference_windows_champion_or_fallback(features):
    ts = features.filter(pl.col("symbol") == "BTCUSDT")["timestamp"].sort()
    tracker = FakeTracker({"BTCUSDT": (int(ts[0]), int(ts[499]))})
    windows, described = reference_windows(tracker, features, list(SYMBOLS), 100, 300)
    assert windows["BTCUSDT"] == (int(ts[0]), int(ts[499]))
    assert described["BTCUSDT"].endswith("v7 training window")
    eth = features.filter(pl.col("symbol") == "ETHUSDT")["timestamp"].sort()
    end = len(eth) - 100 - 1  # the bar before the recent window, 300 bars back from it
    assert windows["ETHUSDT"] == (int(eth[end - 299]), int(eth[end]))
    assert described["ETHUSDT"] == "300 bars before the recent window (no champion yet)"


def test_feature_drift_matches_the_report_and_names_the_alarm(features):
    # A planted level shift on the newest 100 ETH bars of one feature: beyond training.
    feature = FEATURE_COLUMNS[0]
    newest = features.filter(pl.col("symbol") == "ETHUSDT")["timestamp"].sort()[-100]
    shifted = features.with_columns(
        pl.when((pl.col("symbol") == "ETHUSDT") & (pl.col("timestamp") >= newest))
        .then(pl.col(feature) + 10.0 * pl.col(feature).std())
        .otherwise(pl.col(feature))
        .alias(feature)
    )
    tracker = FakeTracker({})
    out = feature_drift(_settings(drift_window=100, walk=(600, 1, 1, 1)), tracker, shifted)
    windows, _ = reference_windows(tracker, shifted, list(SYMBOLS), 100, 600)
    report = drift_report(shifted, windows, 100, FEATURE_COLUMNS, 0.1, 0.25)
    assert out.report.equals(report) and out.level == "error"
    top = report.sort("psi", descending=True).row(0, named=True)
    assert (out.worst.symbol, out.worst.feature, out.worst.psi) == (
        top["symbol"],
        top["feature"],
        top["psi"],
    )
    assert out.alarm is not None and (out.alarm.symbol, out.alarm.feature) == ("ETHUSDT", feature)
    assert out.alarm.psi > out.alarm.psi_in_training
    assert set(out.reference) == set(SYMBOLS)


def test_feature_drift_errors_name_the_symbol(features):
    ts = features.filter(pl.col("symbol") == "SOLUSDT")["timestamp"].sort()
    tracker = FakeTracker({"SOLUSDT": (int(ts[0]), int(ts[-1]))})  # trained up to the newest bar
    s = _settings(drift_window=100, symbols=("SOLUSDT",))
    with pytest.raises(ValueError, match="SOLUSDT: .* and 0 current rows"):
        feature_drift(s, tracker, features)


# ---- the feature_drift check, through Dagster --------------------------------------------------

RECENT, TRAIN = 672, 20_000  # the default LEVIBOT_DRIFT_WINDOW and walk-forward training bars


@pytest.fixture(scope="module")
def one_regime_bars() -> pl.DataFrame:
    """21,000 bars (~7 months) per symbol of the synthetic market held in one regime (no regime
    switches; stochastic volatility, fat tails and correlation as usual): ordinary data."""
    params, n = MarketParams(regime_switch=0.0), 21_000
    frames = [simulate_bars(s, 0, (n - 1) * TF_MS, TF_MS, seed=7, params=params) for s in SYMBOLS]
    return pl.concat(
        validate_ohlcv(f, symbol=s, source="synthetic", tf_ms=TF_MS).bars
        for s, f in zip(SYMBOLS, frames, strict=True)
    )


def _volatility_shock(bars: pl.DataFrame, symbol: str, newest: int, factor: float) -> pl.DataFrame:
    """``bars`` with the newest ``newest`` bars of ``symbol`` ``factor`` times as volatile:
    every log-price move since the close before them (returns and bar ranges) times ``factor``."""
    own = bars.filter(pl.col("symbol") == symbol).sort("timestamp")
    start = own["timestamp"][-newest]
    base = float(np.log(own["close"][-newest - 1]))
    shocked = (pl.col("symbol") == symbol) & (pl.col("timestamp") >= start)
    return bars.with_columns(
        pl.when(shocked)
        .then((base + factor * (pl.col(c).log() - base)).exp())
        .otherwise(pl.col(c))
        .alias(c)
        for c in ("open", "high", "low", "close")
    )


def _check_and_switch(home: Path, bars: pl.DataFrame) -> tuple[dg.AssetCheckEvaluation, str]:
    """The real ``feature_drift`` check on the features of ``bars`` (default drift window and
    training length, no champion yet: the bars before the recent window are the reference), and
    the kill-switch state the publisher's path sets from the same computation."""
    settings = _settings(drift_window=RECENT, walk=(TRAIN, 3_000, 3_000, 4_000), home=home)
    features = build_features(bars, tf_ms=TF_MS, horizon=1)

    @dg.asset(name="cross_asset_features")
    def planted() -> dg.MaterializeResult:
        ParquetStore(home).write_features(features)
        return dg.MaterializeResult()

    models = ModelResource(settings)
    result = dg.materialize([planted, feature_drift_check], resources={"models": models})
    (evaluation,) = result.get_asset_check_evaluations()
    drift = feature_drift(settings, models.tracker(), features)
    inputs = RiskInputs(drift_worst=drift.worst, drift_alarm=drift.alarm)
    switch = evaluate_kill_switch(KillSwitch(home), inputs, risk_limits(settings), by="test")
    return evaluation, switch.state


def test_drift_check_is_green_on_ordinary_data(tmp_path, one_regime_bars):
    evaluation, state = _check_and_switch(tmp_path, one_regime_bars)
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    # Textbook levels would call this ERROR (slow features stray past 0.25 on ordinary weeks) ...
    assert meta["max_psi"] > 0.25
    # ... but every feature stays within its in-training spread: passed, and no kill-switch.
    assert evaluation.passed, meta["verdict"]
    assert meta["verdict"].startswith("ok") and meta["kill_switch_trigger"] == "none"
    assert state == "ACTIVE"
    assert "psi_in_training_by_symbol_feature" in meta and "psi_by_symbol_feature" in meta


def test_drift_check_fails_with_error_on_a_volatility_shock(tmp_path, one_regime_bars):
    # ETH five times as volatile over the recent window: a real shock.
    shocked = _volatility_shock(one_regime_bars, "ETHUSDT", RECENT, 5.0)
    evaluation, state = _check_and_switch(tmp_path, shocked)
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert meta["verdict"].startswith("error: PSI") and "(ETHUSDT)" in meta["verdict"]
    assert any(f" on {f} " in meta["verdict"] for f in ("vol_20", "range", "ret_1"))
    # The same rule reaches the kill-switch: REDUCING, for the row the check names.
    assert meta["kill_switch_trigger"] == "REDUCING" and state == "REDUCING"
    reason = KillSwitch(tmp_path).status().reason()
    assert meta["verdict"].split(" (ETHUSDT)")[0].removeprefix("error: ") in reason


def test_reference_windows_name_a_symbol_without_rows(features):
    with pytest.raises(ValueError, match="no feature rows for XRPUSDT"):
        reference_windows(FakeTracker({}), features, ["XRPUSDT"], 100, 600)


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (0.0, "PASS"),
        (5.0, "PASS"),  # at the warn limit: still PASS
        (5.1, "WARN"),
        (30.0, "WARN"),
        (30.1, "FAIL"),
        (float("inf"), "FAIL"),  # no data at all
    ],
)
def test_freshness_state(minutes, expected):
    assert freshness_state(minutes, 5.0, 30.0) == expected


def test_freshness_state_rejects_nan():
    with pytest.raises(ValueError, match="stale_minutes=nan"):
        freshness_state(float("nan"), 5.0, 30.0)
