"""Prometheus metrics built from the published predictions at scrape (or push) time.

A fresh ``CollectorRegistry`` per call, so a metric never outlives the file it came from (a
symbol dropped from the configuration disappears at the next scrape). The API's own request and
process metrics live elsewhere (``api_metrics``); ``/metrics/prom`` serves both.

Numeric encodings (also in ``deploy/README.md`` and the Grafana value mappings), each with an
``_info`` twin whose label holds the name (value always 1), for tables and legends:
- ``levibot_ml_signal``: ENTRY_LONG = 1, ENTRY_SHORT = -1, HOLD = 0, EXIT = 2 (the decision at the
  close of ``bar_time``; the signed exposure after it is ``levibot_ml_position``);
  ``levibot_ml_signal_info{symbol,signal}``.
- ``levibot_kill_switch_state``: ACTIVE = 0, REDUCING = 1, HALTED = 2;
  ``levibot_kill_switch_info{state}``.
- ``levibot_ml_regime_state``: trend = +1, neutral = 0, meanrev = -1 (the published value);
  ``levibot_ml_regime_info{symbol,regime}``.

Time: ``levibot_ml_last_bar_close_timestamp_seconds{symbol}`` and
``levibot_predictions_published_timestamp_seconds`` are Unix times (s) and mean the same whether
scraped or pushed; alert rules compute ages from them as ``time() - <timestamp>``. The ages
``levibot_data_lag_seconds`` and ``levibot_prediction_age_seconds`` are computed against
``now_ms``: right at scrape time, but frozen at push time in a Pushgateway (kept for current
users of the scraped endpoint; do not alert on pushed ages).
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
    ``levibot_predictions_available 0``); ``now_ms`` (ms UTC) is the time the ages are measured
    at.

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
        gauges.kill_info.labels(state).set(1)
    return reg


_SYM = ("symbol",)
# (field of _Gauges, exposed name, HELP, labels), in exposition order.
_DECLARED: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "unc",
        "levibot_ml_uncertainty",
        "Deep model total predictive std of the log return, sqrt(aleatoric + epistemic).",
        _SYM,
    ),
    (
        "ratio",
        "levibot_ml_cross_asset_ratio",
        "Raw price ratio close(A)/close(B) of a pair A_B (both quoted in USDT), e.g. "
        "BTC_ETH = price of one BTC in ETH; dimensionless.",
        ("pair",),
    ),
    ("regime", "levibot_ml_regime_state", "Regime: trend +1, neutral 0, meanrev -1.", _SYM),
    (
        "regime_info",
        "levibot_ml_regime_info",
        "Regime by name (trend, neutral, meanrev); value 1.",
        ("symbol", "regime"),
    ),
    (
        "p_up",
        "levibot_ml_p_up",
        "Calibrated P(close(t+h) > close(t)) per model.",
        ("symbol", "model"),
    ),
    (
        "signal",
        "levibot_ml_signal",
        "Decision at the bar close: ENTRY_LONG 1, ENTRY_SHORT -1, HOLD 0, EXIT 2.",
        _SYM,
    ),
    (
        "signal_info",
        "levibot_ml_signal_info",
        "Decision at the bar close by name (ENTRY_LONG, ENTRY_SHORT, HOLD, EXIT); value 1.",
        ("symbol", "signal"),
    ),
    ("position", "levibot_ml_position", "Signed position size held after the decision.", _SYM),
    (
        "bar_close",
        "levibot_ml_last_bar_close_timestamp_seconds",
        "Unix time (s) of the close of the newest predicted bar; data lag = time() - this.",
        _SYM,
    ),
    (
        "lag",
        "levibot_data_lag_seconds",
        "Seconds since the close of the newest predicted bar, at scrape time (frozen when "
        "pushed: alert on levibot_ml_last_bar_close_timestamp_seconds instead).",
        _SYM,
    ),
    (
        "age",
        "levibot_prediction_age_seconds",
        "Seconds since the prediction was published, at scrape time (frozen when pushed: "
        "alert on levibot_predictions_published_timestamp_seconds instead).",
        _SYM,
    ),
    (
        "drawdown",
        "levibot_paper_drawdown_ratio",
        "Paper-trading drawdown from the equity peak, a fraction (0.1 = 10%).",
        _SYM,
    ),
    (
        "decision_info",
        "levibot_decision_info",
        "Model the published decision policy trades on (lgbm, deep, ensemble, reversal; flat: "
        "no validated edge after costs, never trades); value 1.",
        ("symbol", "model"),
    ),
    (
        "horizon",
        "levibot_decision_horizon_bars",
        "Bars the decision policy holds a position at least; absent for the flat policy.",
        _SYM,
    ),
    (
        "expected_net",
        "levibot_decision_expected_net_return_ratio",
        "Expected return of an entry at the bar close over the horizon, after the round trip, "
        "a fraction of notional (0.0012 = 12 bps); absent for the flat policy.",
        _SYM,
    ),
    ("kill", "levibot_kill_switch_state", "Kill-switch: ACTIVE 0, REDUCING 1, HALTED 2.", ()),
    (
        "kill_info",
        "levibot_kill_switch_info",
        "Kill-switch state by name (ACTIVE, REDUCING, HALTED); value 1.",
        ("state",),
    ),
    (
        "published",
        "levibot_predictions_published_timestamp_seconds",
        "Unix time (s) of the latest publish; prediction age = time() - this.",
        (),
    ),
)


@dataclass(frozen=True)
class _Gauges:
    """The metrics of a registry with predictions (``_DECLARED``); ``_info`` ones hold 1 on
    the series whose label names the current state."""

    unc: Gauge
    ratio: Gauge
    regime: Gauge
    regime_info: Gauge
    p_up: Gauge
    signal: Gauge
    signal_info: Gauge
    position: Gauge
    bar_close: Gauge
    lag: Gauge
    age: Gauge
    drawdown: Gauge
    decision_info: Gauge
    horizon: Gauge
    expected_net: Gauge
    kill: Gauge
    kill_info: Gauge
    published: Gauge

    @classmethod
    def declare(cls, reg: CollectorRegistry) -> _Gauges:
        """Register every metric of ``_DECLARED`` on ``reg``, in its order."""
        return cls(
            **{
                field: Gauge(name, doc, labels, registry=reg)
                for field, name, doc, labels in _DECLARED
            }
        )

    def set_symbol(self, row: dict, now_ms: int) -> None:
        """One published ``row``'s per-symbol values; ages in seconds against ``now_ms``."""
        s = row["symbol"]
        self.unc.labels(s).set(row["deep_sigma"])
        self.regime.labels(s).set(row["regime_state"])
        self.regime_info.labels(s, row["regime"]).set(1)
        for model, col in P_UP_COLUMNS.items():
            self.p_up.labels(s, model).set(row[col])
        self.signal.labels(s).set(SIGNAL_CODES[row["signal"]])
        self.signal_info.labels(s, row["signal"]).set(1)
        self.position.labels(s).set(row["position"])
        self.bar_close.labels(s).set(row["bar_close_time"] / 1000)
        self.lag.labels(s).set((now_ms - row["bar_close_time"]) / 1000)
        self.age.labels(s).set((now_ms - row["published_at"]) / 1000)
        self.drawdown.labels(s).set(row["paper_drawdown"])
        self.decision_info.labels(s, row["decision_model"]).set(1)
        if row["horizon"] is not None:
            self.horizon.labels(s).set(row["horizon"])
        if row["expected_net_bps"] is not None:
            self.expected_net.labels(s).set(row["expected_net_bps"] * 1e-4)


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
    ``levibot``). The pushed ages are those at push time and stay there: alert on the
    timestamps (``time() - levibot_ml_last_bar_close_timestamp_seconds``).

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
    *(name for _, name, _, _ in _DECLARED),
)
"""The families ``build_registry`` exposes (as named in the text format) when predictions exist."""
