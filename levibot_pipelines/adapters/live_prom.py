"""Prometheus gauges of the live scores (``live/summary.json``, ``adapters.live_files``).

Built at scrape time in a fresh ``CollectorRegistry`` (like ``adapters.prom``) and appended by
the API's ``/metrics/prom``. Without a summary (nothing scored yet, or an unreadable file) no
family is exposed at all. A score that is undefined in the window (an AUC with one class) is
absent rather than NaN. Values are over the newest ``LEVIBOT_LIVE_WINDOW`` matured bars.

``levibot_live_calibration_drift`` comes from the live recalibration's state
(``live/recalibration.json``, ``adapters.recal_files``; ``render_drift_metrics``): per symbol
and model the largest shift of a published probability by the Platt map fitted on the newest
``LEVIBOT_RECAL_MIN_BARS`` matured bars; absent where too few bars matured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

_SM = ("symbol", "model")
# (key in the summary's per-model scores, name, HELP)
_MODEL_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("auc", "levibot_live_auc", "ROC AUC of the published P(up) on the matured bars."),
    ("log_loss", "levibot_live_log_loss", "Mean log loss (nats) of the published P(up)."),
    ("brier", "levibot_live_brier", "Brier score (mean squared error) of the published P(up)."),
    (
        "ece",
        "levibot_live_ece",
        "Expected calibration error (L1, 15 uniform bins) of the published P(up).",
    ),
    (
        "ic",
        "levibot_live_ic",
        "Information coefficient: Spearman correlation of the published P(up) with the "
        "realised forward log return.",
    ),
    ("n", "levibot_live_matured_bars", "Matured published bars in the rolling live window."),
)
_PNL = (
    "levibot_live_paper_pnl_ratio",
    "Net return of the paper book over the live window (close of its oldest bar to the newest "
    "stored close, after fees and slippage), a fraction (0.01 = 1%).",
)
LIVE_METRIC_NAMES: tuple[str, ...] = (*(name for _, name, _ in _MODEL_GAUGES), _PNL[0])
_DRIFT = (
    "levibot_live_calibration_drift",
    "Calibration drift of the published P(up): the largest |map(p) - p| over the newest "
    "LEVIBOT_RECAL_MIN_BARS matured bars, map the Platt recalibration fitted on them "
    "(probability units; 0 = calibrated).",
)
DRIFT_METRIC_NAME = _DRIFT[0]


def build_live_registry(
    summary: dict[str, Any] | None, symbols: Sequence[str]
) -> CollectorRegistry:
    """The live gauges of the configured ``symbols`` in ``summary`` (``parse_summary``'s
    document); an empty registry when ``summary`` is None."""
    reg = CollectorRegistry(auto_describe=True)
    if summary is None:
        return reg
    gauges = {key: Gauge(name, doc, _SM, registry=reg) for key, name, doc in _MODEL_GAUGES}
    pnl = Gauge(*_PNL, ("symbol",), registry=reg)
    for symbol in symbols:
        entry = summary["symbols"].get(symbol)
        if entry is None:
            continue
        for model, scores in entry["models"].items():
            for key, gauge in gauges.items():
                if _number(scores.get(key)):
                    gauge.labels(symbol, model).set(scores[key])
        if _number(entry.get("paper_pnl_ratio")):
            pnl.labels(symbol).set(entry["paper_pnl_ratio"])
    return reg


def _number(value: Any) -> bool:
    """A JSON number (not a bool, not null): what a gauge may hold."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def render_live_metrics(summary: dict[str, Any] | None, symbols: Sequence[str]) -> bytes:
    """Prometheus text exposition of ``build_live_registry`` (empty bytes without a summary)."""
    if summary is None:
        return b""
    return generate_latest(build_live_registry(summary, symbols))


def render_drift_metrics(drift: dict[str, Any] | None, symbols: Sequence[str]) -> bytes:
    """Prometheus text of ``levibot_live_calibration_drift{symbol,model}`` from ``drift`` (the
    state's ``drift`` object: symbol -> model -> probe, ``max_abs_shift`` null when too few
    bars) for the configured ``symbols``; empty bytes when ``drift`` is None or has no value."""
    values = {
        (symbol, model): probe["max_abs_shift"]
        for symbol in symbols
        for model, probe in (drift or {}).get(symbol, {}).items()
        if _number(probe.get("max_abs_shift"))
    }
    if not values:
        return b""
    reg = CollectorRegistry(auto_describe=True)
    gauge = Gauge(*_DRIFT, _SM, registry=reg)
    for (symbol, model), value in values.items():
        gauge.labels(symbol, model).set(value)
    return generate_latest(reg)
