"""Monitoring: feature drift (PSI of the newest bars against the champion's training window)
and the feature table's data-time freshness.

:func:`feature_drift` only observes: the ``feature_drift`` asset check reports it, and the
publisher (which runs after every feature build once every symbol has trained models) hands it
to ``usecases.risk``, which sets the kill-switch's drift trigger. Both judge it by one rule,
``core.trading.drift.drift_level``: the check is at ERROR exactly when the switch has an alarm.
:func:`watch_freshness` is the ``feature_freshness_alert`` sensor's use case: it evaluates the
staleness trigger through ``usecases.risk`` and says whether the PASS/WARN/FAIL state changed
since the last look.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import polars as pl

from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.adapters.registry import model_name
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.data.timeframes import freshness_state, staleness_minutes
from levibot_pipelines.core.trading.drift import drift_alarm, drift_report, max_level
from levibot_pipelines.core.trading.killswitch import PsiReading, RiskInputs
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.risk import evaluate_kill_switch, risk_limits

FEATURES = "cross_asset_features"


@dataclass(frozen=True)
class DriftResult:
    """A drift report (``core.trading.drift.REPORT_SCHEMA``, one row per symbol and feature),
    its worst ``level`` ("ok"/"warn"/"error", from ``drift_level``: the check's verdict), the
    ``worst`` PSI (largest, whatever its level), the ``alarm`` the kill-switch acts on (the
    largest PSI at level "error"; ``None`` when none, i.e. whenever ``level`` is not "error")
    and, per symbol, a description of its ``reference`` window."""

    report: pl.DataFrame
    level: str
    worst: PsiReading
    alarm: PsiReading | None
    reference: dict[str, str] = field(default_factory=dict)


def reference_windows(
    tracker: Tracker, features: pl.DataFrame, symbols: list[str], recent: int, fallback: int
) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Per symbol, the (first, last) bar of the LightGBM champion's training window, or - before
    any champion exists - the ``fallback`` bars preceding the recent window (said so)."""
    windows, described = {}, {}
    for symbol in symbols:
        name = model_name("lgbm", symbol)
        champ = tracker.champion(name)
        meta = json.loads(tracker.download_file(name, champ[0], "model/meta.json")) if champ else {}
        if "train_start_ms" in meta:
            windows[symbol] = (int(meta["train_start_ms"]), int(meta["train_end_ms"]))
            described[symbol] = f"{name} v{champ[0]} training window"
            continue
        ts = features.filter(pl.col("symbol") == symbol).get_column("timestamp").sort()
        if ts.is_empty():
            raise ValueError(f"no feature rows for {symbol}: no reference window for its drift")
        end = max(len(ts) - recent - 1, 0)
        start = max(end - fallback + 1, 0)
        windows[symbol] = (int(ts[start]), int(ts[end]))
        described[symbol] = f"{end - start + 1} bars before the recent window (no champion yet)"
    return windows, described


def _reading(row: dict) -> PsiReading:
    return PsiReading(
        symbol=row["symbol"],
        feature=row["feature"],
        psi=float(row["psi"]),
        psi_in_training=float(row.get("psi_in_training", math.nan)),
    )


def feature_drift(s: Settings, tracker: Tracker, features: pl.DataFrame) -> DriftResult:
    """PSI of each model feature, the newest ``drift_window`` bars against each symbol's
    reference window (:func:`reference_windows`; before any champion, the walk-forward training
    length ``walk[0]`` of bars), leveled by ``core.trading.drift.drift_level``: ok within the
    feature's in-training spread or below ``psi_warn`` (0.1), error past ``psi_error`` (0.25)
    and beyond the spread, else warn. Raises ``ValueError`` naming the symbol when a window is
    empty."""
    recent_bars, symbols = s.trading.drift_window, list(s.market.symbols)
    warn, error = s.trading.psi_warn, s.trading.psi_error
    windows, described = reference_windows(
        tracker, features, symbols, recent_bars, s.models.walk[0]
    )
    report = drift_report(features, windows, recent_bars, FEATURE_COLUMNS, warn=warn, error=error)
    worst = report.sort("psi", descending=True).row(0, named=True)
    # One rule for the check and the kill-switch: a feature is at "error" only past the ERROR
    # level AND beyond its in-training spread (slow features exceed 0.25 on ordinary weeks; see
    # core.trading.drift), and the switch's alarm is the largest such row.
    top = drift_alarm(report)
    return DriftResult(
        report=report,
        level=max_level(report),
        worst=_reading(worst),
        alarm=None if top is None else _reading(top),
        reference=described,
    )


@dataclass(frozen=True)
class FreshnessWatch:
    """The feature table's data-time ``staleness`` (minutes; ``inf`` without data), its
    ``state`` (PASS/WARN/FAIL), whether that ``changed`` from the previous look, and the alert
    ``message`` and webhook ``payload`` for a change."""

    staleness: float
    last_bar: int | None
    state: str
    previous: str
    message: str
    payload: dict

    @property
    def changed(self) -> bool:
        return self.state != self.previous


def watch_freshness(
    s: Settings, store: ParquetStore, switch: KillSwitch, previous: str, now_ms: int, by: str
) -> FreshnessWatch:
    """Data-time staleness of the feature table at ``now_ms`` (ms UTC): sets the kill-switch's
    staleness trigger through ``usecases.risk`` (attributed to ``by``) and compares the
    PASS/WARN/FAIL state (``max_staleness_minutes``/``fail_staleness_minutes``) with
    ``previous``."""
    limits = s.alerts
    last = store.features_last_timestamp()
    stale = staleness_minutes(last, now_ms, s.market.timeframe_ms)
    inputs = RiskInputs(staleness_minutes=stale, staleness_subject=FEATURES)
    evaluate_kill_switch(switch, inputs, risk_limits(s), by=by, now_ms=now_ms)
    state = freshness_state(stale, limits.max_staleness_minutes, limits.fail_staleness_minutes)
    message = (
        f"{FEATURES} freshness {previous} -> {state}: staleness {stale:.1f} min "
        f"(warn > {limits.max_staleness_minutes}, fail > {limits.fail_staleness_minutes})"
    )
    payload = {
        "asset": FEATURES,
        "state": state,
        "previous_state": previous,
        "staleness_minutes": None if last is None else stale,
        "last_bar_ms": last,
        "message": message,
    }
    return FreshnessWatch(stale, last, state, previous, message, payload)
