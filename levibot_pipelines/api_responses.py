"""Response bodies of the HTTP API (``levibot_pipelines.api``): JSON-ready dicts shaped as the
``api_schema`` models, the Prometheus text and the ``/healthz`` verdict.

Each builder reads the :class:`Service` (settings, the published file and the live kill-switch,
both through ``adapters.file_cache``) and a published row (``adapters.prediction_files``);
times are ms UTC, staleness is in minutes of data time. API layer: only ``api`` imports this.

The seed's fields keep the seed's types (``api_schema``): ``uncertainty`` is the total
predictive std as a number (its split in ``uncertainty_parts``) and ``signal`` is ``ENTRY`` /
``EXIT`` / ``HOLD`` with the side in ``side``, mapped from the published vocabulary in one
place, :func:`seed_signal`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from levibot_pipelines.adapters.exported_model import PublishedFileError, exported_version
from levibot_pipelines.adapters.file_cache import FileCache
from levibot_pipelines.adapters.killswitch_store import KillSwitchError, KillSwitchStatus
from levibot_pipelines.adapters.live_files import LiveFileError
from levibot_pipelines.adapters.live_prom import render_drift_metrics, render_live_metrics
from levibot_pipelines.adapters.prediction_files import LatestPredictions
from levibot_pipelines.adapters.prom import render_metrics
from levibot_pipelines.adapters.recal_files import RecalFileError
from levibot_pipelines.core.data.timeframes import staleness_minutes, utc_text
from levibot_pipelines.core.trading.killswitch import (
    RiskInputs,
    apply_state,
    automatic_triggers,
    describe,
    effective_state,
    severity,
)
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.recompute import TransformerRecomputer
from levibot_pipelines.usecases.risk import risk_limits

log = logging.getLogger(__name__)
UNCERTAINTY_PARTS = ("total", "aleatoric", "epistemic", "epistemic_p")


@dataclass(frozen=True)
class Service:
    """What the routes read: ``settings``, the published file and the live kill-switch (each
    parsed once per version), the on-demand MC recomputer and the clock (now, ms UTC)."""

    settings: Settings
    latest_file: FileCache
    kill_file: FileCache
    recompute: TransformerRecomputer
    now_ms: Callable[[], int]
    live_file: FileCache | None = None  # live/summary.json (adapters.live_files), when read
    shadow_file: FileCache | None = None  # published/shadow/latest_predictions.json, when read
    recal_file: FileCache | None = None  # live/recalibration.json (adapters.recal_files)


def common(svc: Service, row: dict[str, Any], now: int) -> dict[str, Any]:
    """The fields every prediction shares: the decision under the served kill-switch
    (:func:`served_kill_switch`: the live switch plus the staleness limit; cut when it is
    stricter than at publish, ``core.trading.killswitch.apply_state``), data-time staleness at
    ``now`` (ms UTC), times and regime. ``signal`` and ``side`` as :func:`seed_signal` maps
    the cut decision."""
    s = svc.settings
    staleness = staleness_minutes(row["bar_time"], now, s.market.timeframe_ms)
    state, reason = served_kill_switch(svc, row, staleness)
    # Halted or reduced after the publish, or stale since: never serve the entry as published.
    cut = apply_state(
        row["signal"],
        row["size"],
        row["position"],
        state,
        s.trading.reducing_factor,
        row["kill_switch"],
    )
    levels = cut.signal != "HOLD" or cut.position
    closed = row["closed_side"] if cut.signal == "EXIT" else None
    signal, side = seed_signal(cut.signal, cut.position, closed)
    return {
        "symbol": row["symbol"],
        "signal": signal,
        "side": side,
        "as_of": utc_text(row["bar_close_time"], "milliseconds"),
        "bar_time": row["bar_time"],
        "stale": staleness > s.alerts.max_staleness_minutes,
        "staleness_minutes": round(staleness, 3),
        "source": row["source"],
        "published_at": utc_text(row["published_at"], "milliseconds"),
        "size": cut.size,
        "position": cut.position,
        "stop_loss": row["stop_loss"] if levels else None,
        "take_profit": row["take_profit"] if levels else None,
        "regime": row["regime"],
        "kill_switch": state,
        "kill_switch_reason": reason,
        "kill_switch_applied": cut.applied,
        **decision_fields(row, state, cut.applied),
    }


def decision_fields(row: dict[str, Any], state: str, applied: bool) -> dict[str, Any]:
    """The decision engine's part: the policy's model and horizon, the expected net return of
    an entry at this bar (a fraction of notional, after the round trip; the row keeps bps) and
    the reason, prefixed by the served kill-switch when it cut the published entry."""
    net = row["expected_net_bps"]
    reason = row["decision_reason"]
    if applied:
        cut = "no entry" if state == "HALTED" else "entry size cut"
        reason = f"kill-switch {state}: {cut} ({reason})"
    return {
        "decision_model": row["decision_model"],
        "horizon": row["horizon"],
        "expected_net_return": None if net is None else net * 1e-4,
        "reason": reason,
    }


def seed_signal(published: str, position: float, closed: str | None) -> tuple[str, str | None]:
    """(signal, side) served for the ``published`` decision (``ENTRY_LONG`` / ``ENTRY_SHORT``
    / ``EXIT`` / ``HOLD``, after the kill-switch cut) in the seed's vocabulary:

    - ``ENTRY_LONG`` -> ``("ENTRY", "long")``, ``ENTRY_SHORT`` -> ``("ENTRY", "short")``;
    - ``EXIT`` -> ``("EXIT", closed)``: ``closed`` is the side of the position it closes, as
      the publisher wrote it (``closed_side``; None when nothing was held);
    - ``HOLD`` -> ``("HOLD", side of position)``: ``position`` is the signed size held (+ long,
      - short), so the side held, None when flat.
    """
    if published == "ENTRY_LONG":
        return "ENTRY", "long"
    if published == "ENTRY_SHORT":
        return "ENTRY", "short"
    if published == "EXIT":
        if closed not in (None, "long", "short"):
            raise ValueError(f"closed must be 'long', 'short' or None, got {closed!r}")
        return "EXIT", closed
    if published == "HOLD":
        return "HOLD", _side(position)
    raise ValueError(f"unknown published signal {published!r}")


def _side(position: float | None) -> str | None:
    """``"long"`` for a positive signed size, ``"short"`` for a negative one, else None."""
    if position is None or position == 0.0:
        return None
    return "long" if position > 0.0 else "short"


def served_kill_switch(svc: Service, row: dict[str, Any], staleness: float) -> tuple[str, str]:
    """(state, reason) ``row`` is served under when its bar is ``staleness`` minutes stale in
    data time: the live switch (else the state it was published under; unreadable: HALTED)
    with the staleness rule of ``core.trading.killswitch.automatic_triggers`` evaluated here,
    so a stopped daemon cannot leave a stale entry served as live. The rule's entry replaces a
    stored ``staleness`` entry while it fires; the API never clears a stored trigger."""
    stale = _staleness_entry(svc.settings, row["symbol"], staleness)
    try:
        live: KillSwitchStatus | None = svc.kill_file.get()
    except KillSwitchError as exc:
        return _with_staleness(("HALTED", _unknown_state(exc)), stale)
    if live is None:
        return _with_staleness((row["kill_switch"], row["kill_switch_reason"]), stale)
    entries = {**live.entries, **stale}
    return effective_state(entries), describe(entries)


def _staleness_entry(settings: Settings, symbol: str, staleness: float) -> dict[str, dict]:
    """``{"staleness": entry}`` while the staleness rule fires on ``symbol``'s published bar
    (``settings.trading.kill_staleness_minutes``, default 60), else ``{}``."""
    inputs = RiskInputs(staleness_minutes=staleness, staleness_subject=f"published {symbol} bar")
    state, reason = automatic_triggers(inputs, risk_limits(settings))["staleness"]
    return {"staleness": {"state": state, "reason": reason}} if state else {}


def _with_staleness(switch: tuple[str, str], stale: dict[str, dict]) -> tuple[str, str]:
    """``switch``, a (state, reason) known only as text (as published, or unreadable), with the
    entries ``stale`` (empty: unchanged): the most severe state, the reasons most severe first
    and ``switch`` first among equals, as ``describe`` orders a manual entry."""
    if not stale:
        return switch
    state, reason = switch
    parts = [reason, describe(stale)]
    if severity(state) < severity(effective_state(stale)):
        parts.reverse()
    entries = {"switch": {"state": state}, **stale}
    return effective_state(entries), "; ".join(p for p in parts if p)


def deep_uncertainty(row: dict[str, Any]) -> dict[str, Any]:
    """``uncertainty`` (the total predictive std of the log return, a number) and
    ``uncertainty_parts`` (its split, log-return units, ``api_schema``) of the published
    Transformer."""
    parts = {
        "total": row["deep_sigma"],
        "aleatoric": row["deep_aleatoric"],
        "epistemic": row["deep_epistemic"],
        "epistemic_p": row["deep_epistemic_p"],
    }
    return {"uncertainty": parts["total"], "uncertainty_parts": parts}


def uncertainty_source(w_lgbm: float) -> str:
    """Which members the ensemble's P(up) rests on by its effective LightGBM weight ``w_lgbm``
    in [0, 1] on the bar: ``"deep"`` (0), ``"lgbm"`` (1), ``"blend"`` (strictly between).
    ``core.models.ensemble.bar_weights`` is exactly 0 or 1 only when the fitted weight is."""
    if not 0.0 <= w_lgbm <= 1.0:
        raise ValueError(f"w_lgbm must be in [0, 1], got {w_lgbm}")
    if w_lgbm == 0.0:
        return "deep"
    return "lgbm" if w_lgbm == 1.0 else "blend"


def deep_body(svc: Service, row: dict[str, Any], now: int) -> dict[str, Any]:
    """``/ml/predict_deep`` as published."""
    return {
        **common(svc, row, now),
        "model_type": "transformer_mc_dropout",
        "p_up": row["deep_p_up"],
        "mu": row["deep_mu"],
        **deep_uncertainty(row),
        "confidence": row["deep_confidence"],
        "mc_samples": row["mc_samples"],
        "model_version": row["deep_version"],
        "recomputed": False,
    }


def recomputed_body(published: dict[str, Any], mc: dict[str, float], n_samples: int) -> dict:
    """``/ml/predict_deep`` with ``n_samples`` fresh MC draws ``mc`` (``usecases.recompute``)."""
    parts = {k: mc[k] for k in UNCERTAINTY_PARTS}
    return {
        **published,
        "p_up": mc["p_up"],
        "mu": mc["mu"],
        "uncertainty": parts["total"],
        "uncertainty_parts": parts,
        "confidence": mc["confidence"],
        "mc_samples": n_samples,
        "recomputed": True,
    }


def ensemble_body(svc: Service, row: dict[str, Any], now: int) -> dict[str, Any]:
    """``/ml/predict_ensemble``: the ensemble's P(up); uncertainty from the deep member, the
    only one with an estimate, and ``uncertainty_source`` by the bar's effective weights."""
    return {
        **common(svc, row, now),
        "model_type": "ensemble",
        "p_up": row["ensemble_p_up"],
        "mu": row["deep_mu"],
        **deep_uncertainty(row),
        "confidence": row["ensemble_confidence"],
        "mc_samples": row["mc_samples"],
        "model_version": f"lgbm v{row['lgbm_version']} + deep v{row['deep_version']}",
        "w_lgbm": row["w_lgbm"],
        "uncertainty_source": uncertainty_source(row["w_lgbm"]),
    }


def lgbm_body(svc: Service, row: dict[str, Any], now: int) -> dict[str, Any]:
    """``/ml/predict``: the calibrated LightGBM, without an uncertainty estimate."""
    return {
        **common(svc, row, now),
        "model_type": "lightgbm_calibrated",
        "p_up": row["lgbm_p_up"],
        "mu": None,
        "uncertainty": None,
        "uncertainty_parts": None,
        "confidence": row["lgbm_confidence"],
        "mc_samples": None,
        "model_version": row["lgbm_version"],
    }


def deep_status_body(svc: Service, doc: LatestPredictions) -> dict[str, Any]:
    """``/ml/models/deep/status`` over the published ``doc``: per symbol the published deep
    version, MC samples, bar, staleness and whether its export is present; the kill-switch as
    served for the row with the newest bar (the live switch plus the staleness limit)."""
    now = svc.now_ms()
    symbols: dict[str, dict[str, Any]] = {}
    for symbol in svc.settings.market.symbols:
        row = doc.rows.get(symbol)
        if row is None:
            symbols[symbol] = {"published": False}
            continue
        c = common(svc, row, now)
        exported = exported_version(svc.settings.home, symbol) == row["deep_version"]
        symbols[symbol] = {
            "published": True,
            "deep_version": row["deep_version"],
            "mc_samples": row["mc_samples"],
            "bar_time": row["bar_time"],
            "as_of": c["as_of"],
            "published_at": c["published_at"],
            "stale": c["stale"],
            "staleness_minutes": c["staleness_minutes"],
            "model_exported": exported,
        }
    c = common(svc, max(doc.rows.values(), key=lambda r: r["bar_time"]), now)
    return {
        "published_at": utc_text(doc.published_at, "milliseconds"),
        "kill_switch": {"state": c["kill_switch"], "reason": c["kill_switch_reason"]},
        "symbols": symbols,
    }


def metrics_text(svc: Service) -> bytes:
    """Prometheus text format built from the published file (none when unreadable) and the
    live kill-switch, then the live scores' gauges (none without a readable summary)."""
    try:
        doc = svc.latest_file.get()
    except PublishedFileError:
        doc = None
    live = _live_kill_switch(svc.kill_file)
    symbols = svc.settings.market.symbols
    text = render_metrics(doc, symbols, svc.now_ms(), live[0] if live else None)
    text += render_drift_metrics(_recal_drift(svc.recal_file), symbols)
    return text + render_live_metrics(_live_summary(svc.live_file), symbols)


def _recal_drift(recal_file: FileCache | None) -> dict[str, Any] | None:
    """The live recalibration's drift probes; None when absent or unreadable (logged)."""
    if recal_file is None:
        return None
    try:
        state = recal_file.get()
    except RecalFileError as exc:
        log.warning("calibration drift not served: %s", exc)
        return None
    return state["drift"] if state else None


def _live_summary(live_file: FileCache | None) -> dict[str, Any] | None:
    """The live scores' summary; None when absent or unreadable (logged: gauges go absent)."""
    if live_file is None:
        return None
    try:
        return live_file.get()
    except LiveFileError as exc:
        log.warning("live scores summary not served: %s", exc)
        return None


def health_body(svc: Service) -> tuple[int, dict[str, Any]]:
    """(status code, body) of ``/healthz``: 503 with ``reasons`` when unhealthy."""
    body, reasons = _health(svc.settings, svc.latest_file, svc.kill_file, svc.now_ms())
    body["status"] = "unhealthy" if reasons else "ok"
    if reasons:
        body["reasons"] = reasons
    return (503 if reasons else 200), body


def _live_kill_switch(kill_file: FileCache) -> tuple[str, str] | None:
    """(state, reason) of the live switch; None when there is no file. An unreadable file
    fails safe: HALTED, saying why (``adapters.killswitch_store`` never guesses ACTIVE either)."""
    try:
        live: KillSwitchStatus | None = kill_file.get()
    except KillSwitchError as exc:
        return "HALTED", _unknown_state(exc)
    return (live.state, live.reason()) if live else None


def _unknown_state(exc: KillSwitchError) -> str:
    """The reason an unreadable switch is served as HALTED, naming why."""
    return f"kill-switch state unknown, treated as HALTED: {exc}"


def _health(
    settings: Settings, latest_file: FileCache, kill_file: FileCache, now: int
) -> tuple[dict[str, Any], list[str]]:
    """(body without ``status``, reasons to fail) of ``/healthz`` at ``now`` (ms UTC): published
    time, per-symbol staleness and the kill-switch (live file, else as published)."""
    reasons: list[str] = []
    body: dict[str, Any] = {}
    try:
        doc = latest_file.get()
    except PublishedFileError as exc:
        doc = None
        reasons.append(f"published predictions are unreadable: {exc}")
    else:
        if doc is None:
            reasons.append("no predictions published yet: run the pipeline (make demo)")
    kill = _live_kill_switch(kill_file)  # (state, reason): the live file, else as published
    if doc is not None:
        body["published_at"] = utc_text(doc.published_at, "milliseconds")
        missing = [s for s in settings.market.symbols if s not in doc.rows]
        if missing:
            reasons.append(f"no published prediction for {missing}")
        body["symbols"] = {}
        for symbol in [s for s in settings.market.symbols if s in doc.rows]:
            row = doc.rows[symbol]
            minutes = staleness_minutes(row["bar_time"], now, settings.market.timeframe_ms)
            body["symbols"][symbol] = {"staleness_minutes": round(minutes, 3)}
            if minutes > settings.alerts.fail_staleness_minutes:
                reasons.append(
                    f"{symbol} stale: {minutes:.1f} min in data time, newest bar closed "
                    f"{utc_text(row['bar_close_time'], 'milliseconds')} "
                    f"(limit {settings.alerts.fail_staleness_minutes:g} min)"
                )
        if kill is None and doc.rows:
            first = next(iter(doc.rows.values()))
            kill = (first["kill_switch"], first["kill_switch_reason"])
    if kill is not None:
        state, reason = kill
        body["kill_switch"] = {"state": state, "reason": reason}
        if state == "HALTED":
            reasons.append(f"kill-switch HALTED: {reason or 'no reason given'}")
    return body, reasons
