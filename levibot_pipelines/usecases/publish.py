"""Publishing the latest predictions: for each symbol, on the newest feature row, the champion
Transformer's MC-dropout pass, the calibrated LightGBM, the ensemble, the regime, the decision
engine's decision (the policy stored with the champions, ``usecases.ensemble``) against the
paper position, and the kill-switch state; written through
``adapters.prediction_files`` (atomic files + append-only history) for the API and other
services."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from levibot_pipelines.adapters.hardware import resolve_precision
from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.adapters.prediction_files import (
    MC_SEED,
    read_history,
    write_published,
)
from levibot_pipelines.adapters.registry import (
    download_transformer,
    load_lgbm,
    model_name,
    transformer_from_files,
)
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.data.timeframes import staleness_minutes
from levibot_pipelines.core.data.windows import window_ends
from levibot_pipelines.core.evaluation.walk_forward import SymbolData, symbol_data
from levibot_pipelines.core.models.inference import (
    ensemble_outputs,
    lgbm_outputs,
    transformer_outputs,
)
from levibot_pipelines.core.trading.killswitch import RiskInputs, RiskLimits
from levibot_pipelines.core.trading.live import EngineInputs, live_decision
from levibot_pipelines.core.trading.paper import HISTORY_COLUMNS
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.data_home import data_root
from levibot_pipelines.usecases.ensemble import champion_pair, engine_inputs
from levibot_pipelines.usecases.monitor import feature_drift
from levibot_pipelines.usecases.recalibration import recalibrate_published
from levibot_pipelines.usecases.report import backtest_config, policy_config
from levibot_pipelines.usecases.risk import evaluate_kill_switch, risk_limits

log = logging.getLogger(__name__)


@dataclass
class PublishReport:
    path: Path | str  # latest_predictions.json: a Path under the home, or an s3:// URL
    rows: pl.DataFrame
    kill_switch: str
    notes: list[str] = field(default_factory=list)
    # per symbol the live recalibration maps applied to its probabilities (none: the models')
    recalibrated: dict[str, list[str]] = field(default_factory=dict)


def _champion(tracker: Tracker, kind: str, symbol: str) -> str:
    champ = tracker.champion(model_name(kind, symbol))
    if champ is None:
        raise ValueError(
            f"no champion for {model_name(kind, symbol)}: run training_job for {symbol} first"
        )
    return champ[0]


def _predict(
    s: Settings,
    tracker: Tracker,
    features: pl.DataFrame,
    symbol: str,
    now_ms: int,
    notes: list[str],
) -> tuple[dict, dict[str, bytes], EngineInputs]:
    """The champions' part of a symbol's row on its newest feature bar (no decision yet), the
    deep champion's files to export with it, and the stored decision policy with its model's
    score on that bar."""
    versions = {kind: _champion(tracker, kind, symbol) for kind in ("lgbm", "deep")}
    pair = champion_pair(Path(s.home), symbol, versions["lgbm"], versions["deep"], notes)
    return predict_row(s, tracker, features, symbol, now_ms, versions, pair)


def predict_row(
    s: Settings,
    tracker: Tracker,
    features: pl.DataFrame,
    symbol: str,
    now_ms: int,
    versions: dict[str, str],
    pair: dict,
) -> tuple[dict, dict[str, bytes], EngineInputs]:
    """The models' part of a symbol's row on its newest feature bar (no decision yet) from the
    registered ``versions`` (``{"lgbm": v, "deep": v}``) combined with ``pair``'s weight
    ``w_lgbm`` (``ensemble.json``, ``usecases.ensemble.champion_pair``), the deep version's
    files to export with it, and ``pair``'s decision policy with its model's score on that
    bar."""
    data = symbol_data(features, symbol)
    row = len(data.timestamps) - 1
    bar_time = int(data.timestamps[row])
    lg_v, dp_v = versions["lgbm"], versions["deep"]
    booster, cal_l = load_lgbm(tracker, model_name("lgbm", symbol), lg_v)
    deep, transformer_files = _transformer_on_newest_bar(s, tracker, data, dp_v)
    p_l, c_l = lgbm_outputs(booster, cal_l, data.X[row : row + 1])
    p_e, c_e, w_t = ensemble_outputs(p_l, c_l, deep["p_up"], deep["confidence"], pair["w_lgbm"])
    newest = features.filter((pl.col("symbol") == symbol) & (pl.col("timestamp") == bar_time)).row(
        0, named=True
    )
    out = {
        "symbol": symbol,
        "bar_time": bar_time,
        "bar_close_time": bar_time + s.market.timeframe_ms,
        "published_at": now_ms,
        "source": s.market.source,
        "close": float(newest["close"]),
        "deep_p_up": float(deep["p_up"][0]),
        "deep_mu": float(deep["mu"][0]),
        "deep_sigma": float(deep["sigma"][0]),
        "deep_aleatoric": float(deep["aleatoric"][0]),
        "deep_epistemic": float(deep["epistemic"][0]),
        "deep_epistemic_p": float(deep["epistemic_p"][0]),
        "deep_confidence": float(deep["confidence"][0]),
        "mc_samples": s.models.mc_samples,
        "deep_version": dp_v,
        "lgbm_p_up": float(p_l[0]),
        "lgbm_confidence": float(c_l[0]),
        "lgbm_version": lg_v,
        "ensemble_p_up": float(p_e[0]),
        "ensemble_confidence": float(c_e[0]),
        "w_lgbm": float(w_t[0]),
        "ratio_btc_eth": newest.get("ratio_btc_eth_raw"),
        "ratio_eth_sol": newest.get("ratio_eth_sol_raw"),
        "data_lag_s": (now_ms - bar_time - s.market.timeframe_ms) / 1000.0,
    }
    meta = {"version": dp_v, "name": model_name("deep", symbol)}
    engine = engine_inputs(backtest_config(s, symbol).costs, pair, out, float(newest["ret_1"]))
    return out, {**transformer_files, "meta.json": json.dumps(meta).encode()}, engine


def _transformer_on_newest_bar(
    s: Settings, tracker: Tracker, data: SymbolData, version: str
) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    """The Transformer ``version``'s MC-dropout outputs (``transformer_outputs``, one value per
    key) on the newest bar of ``data``, and the model's registered files. ``ValueError`` when the
    window ending at that bar is not contiguous."""
    transformer_files = download_transformer(tracker, model_name("deep", data.symbol), version)
    model, calibrator = transformer_from_files(transformer_files)
    model.set_precision(resolve_precision(s.models.precision, "cpu", s.home))  # as it trained
    row = len(data.timestamps) - 1
    ends = window_ends(data.timestamps, model.config.window, s.market.timeframe_ms)
    if len(ends) == 0 or ends[-1] != row:
        raise ValueError(
            f"{data.symbol}: the {model.config.window} bars ending at {int(data.timestamps[row])} "
            "are not contiguous (a gap in the feature table); no prediction until the window "
            "refills"
        )
    deep = transformer_outputs(
        model, calibrator, data.X, np.array([row]), n_samples=s.models.mc_samples, seed=MC_SEED
    )
    return deep, transformer_files


def _decide(
    s: Settings,
    store: ParquetStore,
    features: pl.DataFrame,
    history: pl.DataFrame,
    row: dict,
    engine: EngineInputs,
    multiplier: float,
) -> dict:
    """The decision engine's decision for ``row`` (from ``_predict``) against the paper
    position that replays the published history; ``multiplier`` is the kill-switch's size
    multiplier."""
    symbol = row["symbol"]
    # A bar published twice (a re-run) counts once: the latest publish is what services saw last.
    past = (
        history.filter(pl.col("symbol") == symbol)
        .sort("published_at")
        .unique("bar_time", keep="last", maintain_order=True)
        .select(HISTORY_COLUMNS)
    )
    decision = live_decision(
        store.read_ohlcv(symbol),
        features.filter(pl.col("symbol") == symbol).select("timestamp", "vol_20", "ret_1"),
        past,
        bar_time=row["bar_time"],
        engine=engine,
        p=row["ensemble_p_up"],
        confidence=row["ensemble_confidence"],
        seed_policy=policy_config(s),
        cfg=backtest_config(s, symbol),
        size_multiplier=multiplier,
    )
    return {
        "regime": decision.regime,
        "regime_state": decision.regime_state,
        "entry_threshold": decision.entry_threshold,
        "signal": decision.signal,
        "position": decision.position,
        "closed_side": decision.closed_side,
        "size": decision.size,
        "stop_loss": decision.stop_loss,
        "take_profit": decision.take_profit,
        "paper_equity": decision.paper_equity,
        "paper_drawdown": decision.paper_drawdown,
        "decision_model": decision.decision_model,
        "horizon": decision.horizon,
        "expected_net_bps": decision.expected_net_bps,
        "decision_reason": decision.reason,
    }


BY = "auto:publish"  # who the kill-switch's history names for the triggers set here


def _market_risk(
    s: Settings, tracker: Tracker, features: pl.DataFrame, now_ms: int, notes: list[str]
) -> RiskInputs:
    """The kill-switch inputs known before deciding: the data-time staleness of the newest
    feature row and the feature drift (``usecases.monitor``). A drift report that cannot be
    computed (a window without rows) leaves the drift trigger as it is, with a note: it never
    stops a publish."""
    newest = int(features.get_column("timestamp").max())
    stale = staleness_minutes(newest, now_ms, s.market.timeframe_ms)
    try:
        drift = feature_drift(s, tracker, features)
    except ValueError as exc:
        notes.append(f"feature drift not evaluated, drift trigger left as it is: {exc}")
        return RiskInputs(staleness_minutes=stale)
    return RiskInputs(staleness_minutes=stale, drift_worst=drift.worst, drift_alarm=drift.alarm)


def _decide_all(
    s: Settings,
    store: ParquetStore,
    features: pl.DataFrame,
    history: pl.DataFrame,
    predicted: dict[str, dict],
    engines: dict[str, EngineInputs],
    switch: KillSwitch,
    limits: RiskLimits,
    now_ms: int,
) -> dict[str, dict]:
    """Every symbol's decision under the switch's state; the worst paper drawdown then feeds
    the drawdown trigger, and the symbols are decided once more only when that changed the
    state (so no entry goes out under a switch the publish itself just engaged)."""
    rows: dict[str, dict] = {}
    for _ in range(2):
        status = switch.status()
        multiplier = status.multiplier(s.trading.reducing_factor)
        for symbol, row in predicted.items():
            decided = _decide(s, store, features, history, row, engines[symbol], multiplier)
            rows[symbol] = {**row, **decided}
        worst = max(s.market.symbols, key=lambda sym: rows[sym]["paper_drawdown"])
        drawdown = RiskInputs(drawdown=rows[worst]["paper_drawdown"], drawdown_symbol=worst)
        if evaluate_kill_switch(switch, drawdown, limits, BY, now_ms).state == status.state:
            break
    return rows


def publish_latest(s: Settings, tracker: Tracker, now_ms: int) -> PublishReport:
    """Compute and publish one row per symbol at ``now_ms`` (ms UTC). The kill-switch's
    automatic triggers are evaluated through ``usecases.risk``: data staleness and feature
    drift before deciding, the paper drawdown after, so the published rows carry the
    resulting state. The decisions are taken on the models' own probabilities; an active live
    recalibration map then replaces the published ``{model}_p_up`` it applies to
    (``usecases.recalibration.recalibrate_published``)."""
    root = data_root(s)  # the data root: the home or LEVIBOT_DATA_URL
    store = ParquetStore(s.home, root)
    features = store.read_features()
    history = read_history(root)
    switch, limits = KillSwitch(s.home), risk_limits(s)
    notes: list[str] = []
    market = _market_risk(s, tracker, features, now_ms, notes)
    evaluate_kill_switch(switch, market, limits, BY, now_ms)
    predicted, models, engines = {}, {}, {}
    for symbol in s.market.symbols:
        predicted[symbol], models[symbol], engines[symbol] = _predict(
            s, tracker, features, symbol, now_ms, notes
        )
    rows = _decide_all(s, store, features, history, predicted, engines, switch, limits, now_ms)
    status = switch.status()
    for row in rows.values():
        row["kill_switch"] = status.state
        row["kill_switch_reason"] = status.reason() if status.state != "ACTIVE" else ""
    # Decided on the models' own probabilities; only the published ones are recalibrated.
    applied = recalibrate_published(Path(s.home), rows, now_ms, notes)
    frame = pl.DataFrame([rows[sym] for sym in s.market.symbols])
    path = write_published(s.home, frame, models, root)
    for note in notes:
        log.warning(note)
    return PublishReport(
        path=path, rows=frame, kill_switch=status.state, notes=notes, recalibrated=applied
    )
