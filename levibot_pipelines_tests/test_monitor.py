"""Monitoring use case: feature drift against the champion's training window (or the fallback
before any champion), and the PASS/WARN/FAIL freshness decision."""

import json
from pathlib import Path

import polars as pl
import pytest

from levibot_pipelines.core.data.features import FEATURE_COLUMNS, build_features
from levibot_pipelines.core.data.timeframes import freshness_state
from levibot_pipelines.core.trading.drift import drift_report
from levibot_pipelines.settings import MarketSettings, ModelSettings, Settings, TradingSettings
from levibot_pipelines.usecases.monitor import feature_drift, reference_windows
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


def _settings(*, drift_window: int, walk=(600, 150, 150, 200), symbols=SYMBOLS) -> Settings:
    return Settings(
        home=Path("/nonexistent"),
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
