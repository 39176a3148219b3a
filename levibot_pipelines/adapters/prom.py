"""Prometheus metrics built from the published predictions at scrape (or push) time.

A fresh ``CollectorRegistry`` per call, so a metric never outlives the file it came from (a
symbol dropped from the configuration disappears at the next scrape). Ages are computed against
``now_ms`` at scrape time, not at publish time.

Encodings (also in ``deploy/README.md`` and the Grafana value mappings):
- ``levibot_ml_signal``: ENTRY_LONG = 1, ENTRY_SHORT = -1, HOLD = 0, EXIT = 2 (the decision at the
  close of ``bar_time``; the signed exposure after it is ``levibot_ml_position``).
- ``levibot_kill_switch_state``: ACTIVE = 0, REDUCING = 1, HALTED = 2.
- ``levibot_ml_regime_state``: trend = +1, neutral = 0, meanrev = -1 (the published value).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

from levibot_pipelines.adapters.prediction_files import LatestPredictions
from levibot_pipelines.adapters.redact import redact_text, redact_url

log = logging.getLogger(__name__)

SIGNAL_CODES: dict[str, int] = {"ENTRY_LONG": 1, "ENTRY_SHORT": -1, "HOLD": 0, "EXIT": 2}
KILL_SWITCH_CODES: dict[str, int] = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}
RATIO_COLUMNS: dict[str, str] = {"BTC_ETH": "ratio_btc_eth", "ETH_SOL": "ratio_eth_sol"}
P_UP_COLUMNS: dict[str, str] = {
    "deep": "deep_p_up",
    "lgbm": "lgbm_p_up",
    "ensemble": "ensemble_p_up",
}
PUSH_JOB = "levibot"


def build_registry(
    latest: LatestPredictions | None,
    symbols: Sequence[str],
    now_ms: int,
    kill_switch: str | None = None,
) -> CollectorRegistry:
    """Gauges for the configured ``symbols`` in ``latest`` (None: only
    ``levibot_predictions_available 0``).

    ``kill_switch`` is the live state (``KillSwitchStatus.state`` of ``adapters.killswitch_store``);
    when None, the most severe state published with the rows is reported. Metric names: see
    ``METRIC_NAMES``.
    """
    reg = CollectorRegistry(auto_describe=True)
    available = Gauge(
        "levibot_predictions_available",
        "1 when a readable latest_predictions.json exists, else 0.",
        registry=reg,
    )
    available.set(0 if latest is None else 1)
    if latest is None:
        return reg
    gauges = _Gauges.declare(reg)
    gauges.published.set(latest.published_at / 1000)
    rows = [latest.rows[s] for s in symbols if s in latest.rows]
    for row in rows:
        gauges.set_symbol(row, now_ms)
    # Every row carries the same raw ratios; take them from the first row that has them.
    for pair, col in RATIO_COLUMNS.items():
        value = next((r[col] for r in rows if r[col] is not None), None)
        if value is not None:
            gauges.ratio.labels(pair).set(value)
    state = kill_switch if kill_switch is not None else _published_state(rows)
    if state is not None:
        gauges.kill.set(KILL_SWITCH_CODES[state])
    return reg


@dataclass(frozen=True)
class _Gauges:
    """The gauges of a registry with predictions (all of ``METRIC_NAMES`` but
    ``levibot_predictions_available``)."""

    unc: Gauge
    ratio: Gauge
    regime: Gauge
    p_up: Gauge
    signal: Gauge
    position: Gauge
    lag: Gauge
    age: Gauge
    drawdown: Gauge
    kill: Gauge
    published: Gauge

    @classmethod
    def declare(cls, reg: CollectorRegistry) -> _Gauges:
        """Register every gauge on ``reg``, in ``METRIC_NAMES`` order."""

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=reg)

        sym = ("symbol",)
        return cls(
            unc=gauge(
                "levibot_ml_uncertainty",
                "Deep model total predictive std of the log return, sqrt(aleatoric + epistemic).",
                sym,
            ),
            ratio=gauge(
                "levibot_ml_cross_asset_ratio",
                "Raw price ratio of a pair, e.g. BTC/ETH.",
                ("pair",),
            ),
            regime=gauge(
                "levibot_ml_regime_state", "Regime: trend +1, neutral 0, meanrev -1.", sym
            ),
            p_up=gauge(
                "levibot_ml_p_up",
                "Calibrated P(close(t+h) > close(t)) per model.",
                ("symbol", "model"),
            ),
            signal=gauge(
                "levibot_ml_signal",
                "Decision at the bar close: ENTRY_LONG 1, ENTRY_SHORT -1, HOLD 0, EXIT 2.",
                sym,
            ),
            position=gauge(
                "levibot_ml_position", "Signed position size held after the decision.", sym
            ),
            lag=gauge(
                "levibot_data_lag_seconds",
                "Seconds since the close of the newest predicted bar.",
                sym,
            ),
            age=gauge(
                "levibot_prediction_age_seconds",
                "Seconds since the prediction was published.",
                sym,
            ),
            drawdown=gauge(
                "levibot_paper_drawdown", "Paper-trading drawdown from the equity peak.", sym
            ),
            kill=gauge("levibot_kill_switch_state", "Kill-switch: ACTIVE 0, REDUCING 1, HALTED 2."),
            published=gauge(
                "levibot_predictions_published_timestamp_seconds",
                "Unix time (s) of the latest publish.",
            ),
        )

    def set_symbol(self, row: dict, now_ms: int) -> None:
        """One published ``row``'s per-symbol values; ages in seconds against ``now_ms``."""
        s = row["symbol"]
        self.unc.labels(s).set(row["deep_sigma"])
        self.regime.labels(s).set(row["regime_state"])
        for model, col in P_UP_COLUMNS.items():
            self.p_up.labels(s, model).set(row[col])
        self.signal.labels(s).set(SIGNAL_CODES[row["signal"]])
        self.position.labels(s).set(row["position"])
        self.lag.labels(s).set((now_ms - row["bar_close_time"]) / 1000)
        self.age.labels(s).set((now_ms - row["published_at"]) / 1000)
        self.drawdown.labels(s).set(row["paper_drawdown"])


def _published_state(rows: list[dict]) -> str | None:
    """The most severe kill-switch state among the rows (they normally agree)."""
    states = [r["kill_switch"] for r in rows]
    return max(states, key=KILL_SWITCH_CODES.__getitem__) if states else None


def render_metrics(
    latest: LatestPredictions | None,
    symbols: Sequence[str],
    now_ms: int,
    kill_switch: str | None = None,
) -> bytes:
    """Prometheus text exposition (``prometheus_client.CONTENT_TYPE_LATEST``) of
    ``build_registry``'s gauges."""
    return generate_latest(build_registry(latest, symbols, now_ms, kill_switch))


def push_metrics(
    url: str | None,
    latest: LatestPredictions | None,
    symbols: Sequence[str],
    now_ms: int | None = None,
    kill_switch: str | None = None,
) -> bool:
    """Push the same gauges to the Pushgateway at ``url`` (LEVIBOT_PUSHGATEWAY_URL; job
    ``levibot``).

    Returns True when pushed, False when no URL is set or the gateway could not be reached
    (logged as a warning, the URL's credentials redacted: monitoring must not fail a publish).
    """
    if not url:
        return False
    import time

    now = int(time.time() * 1000) if now_ms is None else now_ms
    registry = build_registry(latest, symbols, now, kill_switch)
    try:
        push_to_gateway(url, job=PUSH_JOB, registry=registry, timeout=5)
    except OSError as exc:
        log.warning("push to %s failed: %s", redact_url(url), redact_text(str(exc), url))
        return False
    return True


METRIC_NAMES: tuple[str, ...] = (
    "levibot_predictions_available",
    "levibot_ml_uncertainty",
    "levibot_ml_cross_asset_ratio",
    "levibot_ml_regime_state",
    "levibot_ml_p_up",
    "levibot_ml_signal",
    "levibot_ml_position",
    "levibot_data_lag_seconds",
    "levibot_prediction_age_seconds",
    "levibot_paper_drawdown",
    "levibot_kill_switch_state",
    "levibot_predictions_published_timestamp_seconds",
)
