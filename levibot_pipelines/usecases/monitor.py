"""Monitoring: feature drift (PSI of the newest bars against the champion's training window).

Observation only: :func:`feature_drift` returns what it sees; the ``feature_drift`` asset check
reports it, and the kill-switch's drift trigger is set from it by ``usecases.risk`` (called by
the publisher, which runs after every feature build).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import polars as pl

from levibot_pipelines.adapters.registry import model_name
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.trading.drift import drift_alarm, drift_report, max_level
from levibot_pipelines.core.trading.killswitch import PsiReading


@dataclass(frozen=True)
class DriftResult:
    """A drift report (``core.trading.drift.REPORT_SCHEMA``, one row per symbol and feature),
    its worst ``level`` ("ok"/"warn"/"error"), the ``worst`` PSI, the ``alarm`` the kill-switch
    acts on (``None`` when none) and, per symbol, a description of its ``reference`` window."""

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


def feature_drift(
    tracker: Tracker,
    features: pl.DataFrame,
    symbols: list[str],
    *,
    recent_bars: int,
    fallback_bars: int,
    warn: float,
    error: float,
) -> DriftResult:
    """PSI of each model feature, the newest ``recent_bars`` bars (settings ``drift_window``)
    against each symbol's reference window (:func:`reference_windows`; ``fallback_bars`` before
    any champion, the walk-forward training length), leveled by ``warn``/``error`` (settings
    ``psi_warn`` 0.1, ``psi_error`` 0.25). Raises ``ValueError`` naming the symbol when a
    window is empty (``core.trading.drift.drift_report``)."""
    windows, described = reference_windows(tracker, features, symbols, recent_bars, fallback_bars)
    report = drift_report(features, windows, recent_bars, FEATURE_COLUMNS, warn=warn, error=error)
    worst = report.sort("psi", descending=True).row(0, named=True)
    # The kill-switch reacts only to features past the ERROR level AND more unusual than any
    # window of the same length inside the training window (slow features exceed 0.25 on
    # ordinary weeks; see core.trading.drift.drift_report).
    top = drift_alarm(report)
    return DriftResult(
        report=report,
        level=max_level(report),
        worst=_reading(worst),
        alarm=None if top is None else _reading(top),
        reference=described,
    )
