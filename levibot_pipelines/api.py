"""Read-only HTTP API over the published predictions (``adapters.prediction_files``).

Every request reads ``latest_predictions.json`` through ``adapters.file_cache.FileCache``: the
publisher replaces the file atomically, so it is parsed once per publish, not once per request.
The live kill-switch (``home/"kill_switch.json"``) is read the same way. Nothing on this path
imports torch, dagster or duckdb; only ``/ml/predict_deep?n_samples=N`` with N different from
the published sample count imports torch (``usecases.recompute``), to rerun MC dropout on the
exported champion. Response models: ``api_schema``.

Staleness is measured in data time: ``core.data.timeframes.staleness_minutes(bar_time, now, tf)``,
0 while the row's bar is the newest closed bar. ``stale`` is staleness >
``settings.max_staleness_minutes``; ``/healthz`` fails beyond ``fail_staleness_minutes``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from levibot_pipelines.adapters.file_cache import FileCache
from levibot_pipelines.adapters.killswitch_store import (
    STATE_FILE,
    KillSwitchError,
    KillSwitchStatus,
    parse_status,
)
from levibot_pipelines.adapters.prediction_files import (
    LATEST_JSON,
    LatestPredictions,
    PublishedFileError,
    parse_latest,
    published_dir,
)
from levibot_pipelines.adapters.prom import render_metrics
from levibot_pipelines.api_schema import DeepPrediction, EnsemblePrediction, Prediction
from levibot_pipelines.core.data.timeframes import staleness_minutes
from levibot_pipelines.core.trading.killswitch import severity
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.recompute import DeepRecomputer, exported_version

log = logging.getLogger(__name__)
ENTRIES = ("ENTRY_LONG", "ENTRY_SHORT")


SymbolQuery = Annotated[
    str, Query(min_length=1, max_length=32, description="BTCUSDT, BTC/USDT or btcusdt")
]
SamplesQuery = Annotated[
    int | None, Query(ge=1, le=1000, description="MC draws; recomputed when != published")
]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def normalize_symbol(raw: str) -> str:
    """``"btc/usdt"``, ``"BTC-USDT"``, ``" BTCUSDT "`` -> ``"BTCUSDT"``."""
    return "".join(ch for ch in raw.strip().upper() if ch not in "/-_ ")


def create_app(settings: Settings, clock: Callable[[], int] | None = None) -> FastAPI:
    """The API for ``settings.home``; ``clock`` returns now in ms (default: wall clock)."""
    now_ms = clock or (lambda: int(time.time() * 1000))
    latest_file = FileCache(published_dir(settings.home) / LATEST_JSON, parse_latest)
    kill_file = FileCache(
        settings.home / STATE_FILE, lambda text: parse_status(text, settings.home / STATE_FILE)
    )
    recompute = DeepRecomputer(settings)
    known = ", ".join(settings.symbols)
    app = FastAPI(
        title="levibot predictions",
        description="Read-only calibrated P(up), uncertainty and signals per symbol, from the "
        "files the Dagster publish job writes under $LEVIBOT_HOME/published.",
        version="1",
    )

    def latest() -> LatestPredictions:
        try:
            doc = latest_file.get()
        except PublishedFileError as exc:
            raise HTTPException(503, f"published predictions are unreadable: {exc}") from None
        if doc is None:
            raise HTTPException(
                503,
                "no predictions published yet: run the pipeline (make demo, or materialize "
                f"latest_predictions) so that {latest_file.path} exists",
            )
        return doc

    def row_for(raw: str) -> tuple[LatestPredictions, dict[str, Any]]:
        symbol = normalize_symbol(raw)
        if symbol not in settings.symbols:
            raise HTTPException(404, f"unknown symbol {raw!r}; known symbols: {known}")
        doc = latest()
        if symbol not in doc.rows:
            raise HTTPException(
                503, f"no published prediction for {symbol} yet (published: {sorted(doc.rows)})"
            )
        return doc, doc.rows[symbol]

    def common(row: dict[str, Any], now: int) -> dict[str, Any]:
        staleness = staleness_minutes(row["bar_time"], now, settings.timeframe_ms)
        published = (row["kill_switch"], row["kill_switch_reason"])
        state, reason = _live_kill_switch(kill_file) or published
        signal, size, position = row["signal"], row["size"], row["position"]
        # Halted or reduced after the publish: never serve the published entry at full size.
        applied = signal in ENTRIES and severity(state) > severity(row["kill_switch"])
        if applied and state == "HALTED":
            signal, size, position = "HOLD", 0.0, 0.0
        elif applied:
            size, position = size * settings.reducing_factor, position * settings.reducing_factor
        return {
            "symbol": row["symbol"],
            "signal": signal,
            "as_of": _iso(row["bar_close_time"]),
            "bar_time": row["bar_time"],
            "stale": staleness > settings.max_staleness_minutes,
            "staleness_minutes": round(staleness, 3),
            "source": row["source"],
            "published_at": _iso(row["published_at"]),
            "size": size,
            "position": position,
            "stop_loss": row["stop_loss"] if signal != "HOLD" or position else None,
            "take_profit": row["take_profit"] if signal != "HOLD" or position else None,
            "regime": row["regime"],
            "kill_switch": state,
            "kill_switch_reason": reason,
            "kill_switch_applied": applied,
        }

    def deep_uncertainty(row: dict[str, Any]) -> dict[str, float]:
        return {
            "total": row["deep_sigma"],
            "aleatoric": row["deep_aleatoric"],
            "epistemic": row["deep_epistemic"],
            "epistemic_p": row["deep_epistemic_p"],
        }

    @app.get("/ml/predict_deep", response_model=DeepPrediction)
    async def predict_deep(symbol: SymbolQuery, n_samples: SamplesQuery = None) -> dict:
        """Transformer with MC dropout; ``n_samples`` != published reruns the draws."""
        _, row = row_for(symbol)
        out = {
            **common(row, now_ms()),
            "model_type": "transformer_mc_dropout",
            "p_up": row["deep_p_up"],
            "mu": row["deep_mu"],
            "uncertainty": deep_uncertainty(row),
            "confidence": row["deep_confidence"],
            "mc_samples": row["mc_samples"],
            "model_version": row["deep_version"],
            "recomputed": False,
        }
        if n_samples is None or n_samples == row["mc_samples"]:
            return out
        try:
            mc = await run_in_threadpool(recompute, row, n_samples)
        except PublishedFileError as exc:
            raise HTTPException(503, f"cannot recompute {row['symbol']}: {exc}") from None
        uncertainty = {k: mc[k] for k in ("total", "aleatoric", "epistemic", "epistemic_p")}
        return {
            **out,
            "p_up": mc["p_up"],
            "mu": mc["mu"],
            "uncertainty": uncertainty,
            "confidence": mc["confidence"],
            "mc_samples": n_samples,
            "recomputed": True,
        }

    @app.get("/ml/predict_ensemble", response_model=EnsemblePrediction)
    async def predict_ensemble(symbol: SymbolQuery) -> dict:
        """Confidence-weighted LightGBM + Transformer; uncertainty from the deep member."""
        _, row = row_for(symbol)
        return {
            **common(row, now_ms()),
            "model_type": "ensemble",
            "p_up": row["ensemble_p_up"],
            "mu": row["deep_mu"],
            "uncertainty": deep_uncertainty(row),
            "confidence": row["ensemble_confidence"],
            "mc_samples": row["mc_samples"],
            "model_version": f"lgbm v{row['lgbm_version']} + deep v{row['deep_version']}",
            "w_lgbm": row["w_lgbm"],
            "uncertainty_source": "deep",
        }

    @app.get("/ml/predict", response_model=Prediction)
    async def predict_lgbm(symbol: SymbolQuery) -> dict:
        """Calibrated LightGBM (no uncertainty estimate)."""
        _, row = row_for(symbol)
        return {
            **common(row, now_ms()),
            "model_type": "lightgbm_calibrated",
            "p_up": row["lgbm_p_up"],
            "mu": None,
            "uncertainty": None,
            "confidence": row["lgbm_confidence"],
            "mc_samples": None,
            "model_version": row["lgbm_version"],
        }

    @app.get("/ml/models/deep/status")
    async def deep_status() -> dict:
        """Per symbol: published deep version, MC samples, bar, staleness, export present."""
        doc, now = latest(), now_ms()
        symbols = {}
        for symbol in settings.symbols:
            row = doc.rows.get(symbol)
            if row is None:
                symbols[symbol] = {"published": False}
                continue
            c = common(row, now)
            symbols[symbol] = {
                "published": True,
                "deep_version": row["deep_version"],
                "mc_samples": row["mc_samples"],
                "bar_time": row["bar_time"],
                "as_of": c["as_of"],
                "published_at": c["published_at"],
                "stale": c["stale"],
                "staleness_minutes": c["staleness_minutes"],
                "model_exported": exported_version(settings.home, symbol) == row["deep_version"],
            }
        first = next(iter(doc.rows.values()))
        c = common(first, now)
        return {
            "published_at": _iso(doc.published_at),
            "kill_switch": {"state": c["kill_switch"], "reason": c["kill_switch_reason"]},
            "symbols": symbols,
        }

    @app.get("/metrics/prom", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format, built from the published file at scrape time."""
        try:
            doc = latest_file.get()
        except PublishedFileError:
            doc = None
        live = _live_kill_switch(kill_file)
        body = render_metrics(doc, settings, now_ms(), live[0] if live else None)
        return Response(content=body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 when every symbol is published, none stale beyond the fail limit, not HALTED."""
        body, reasons = _health(settings, latest_file, kill_file, now_ms())
        body["status"] = "unhealthy" if reasons else "ok"
        if reasons:
            body["reasons"] = reasons
        return JSONResponse(body, status_code=503 if reasons else 200)

    return app


def _live_kill_switch(kill_file: FileCache) -> tuple[str, str] | None:
    """(state, reason) of the live switch; None when there is no file. An unreadable file
    fails safe: HALTED, saying why (``adapters.killswitch_store`` never guesses ACTIVE either)."""
    try:
        live: KillSwitchStatus | None = kill_file.get()
    except KillSwitchError as exc:
        return "HALTED", f"kill-switch state unknown, treated as HALTED: {exc}"
    return (live.state, live.reason()) if live else None


def _health(
    settings: Settings, latest_file: FileCache, kill_file: FileCache, now: int
) -> tuple[dict[str, Any], list[str]]:
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
        body["published_at"] = _iso(doc.published_at)
        missing = [s for s in settings.symbols if s not in doc.rows]
        if missing:
            reasons.append(f"no published prediction for {missing}")
        body["symbols"] = {}
        for symbol in [s for s in settings.symbols if s in doc.rows]:
            row = doc.rows[symbol]
            minutes = staleness_minutes(row["bar_time"], now, settings.timeframe_ms)
            body["symbols"][symbol] = {"staleness_minutes": round(minutes, 3)}
            if minutes > settings.fail_staleness_minutes:
                reasons.append(
                    f"{symbol} stale: {minutes:.1f} min in data time, newest bar closed "
                    f"{_iso(row['bar_close_time'])} (limit {settings.fail_staleness_minutes:g} min)"
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


def run_server(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve ``create_app(settings)`` with uvicorn (default host/port from settings)."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
        access_log=False,
    )
