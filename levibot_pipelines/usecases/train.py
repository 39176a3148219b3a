"""Retraining operations behind the model assets: fit on the newest walk-forward layout, score
on its test window, package, register in MLflow, and decide the champion like for like."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from levibot_pipelines.adapters.plots import reliability_diagram
from levibot_pipelines.adapters.registry import (
    deep_files,
    lgbm_files,
    load_deep,
    load_lgbm,
    model_name,
    publish_model,
)
from levibot_pipelines.adapters.store import write_parquet_atomic, write_text_atomic
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.evaluation.fitting import (
    deep_confidence,
    fit_deep_rows,
    fit_lgbm_rows,
    latest_rows,
    window_label,
)
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig, SymbolData
from levibot_pipelines.core.metrics import log_loss, summarize
from levibot_pipelines.core.models.ensemble import combine, fit_ensemble_weight
from levibot_pipelines.core.models.lgbm import predict_proba
from levibot_pipelines.core.models.transformer_training import predict

ENSEMBLE_FORMULA = "w_t = w c_lgbm / (w c_lgbm + (1 - w) c_deep); p = w_t p_lgbm + (1 - w_t) p_deep"


@dataclass
class TrainResult:
    symbol: str
    kind: str
    version: str
    window: str
    metrics: dict
    decision: dict
    run_url: str
    reliability_png: bytes
    sizes: dict[str, int] = field(default_factory=dict)


def models_dir(home: Path, symbol: str) -> Path:
    return Path(home) / "models" / symbol


def ensemble_weights_path(home: Path, symbol: str) -> Path:
    return models_dir(home, symbol) / "ensemble.json"


def predictions_path(home: Path, symbol: str, kind: str) -> Path:
    return models_dir(home, symbol) / f"{kind}_test_predictions.parquet"


def _layout(data: SymbolData, cfg: EvalConfig, tf_ms: int) -> dict[str, np.ndarray]:
    return latest_rows(
        data.timestamps,
        data.y_up,
        data.fwd_ret,
        walk=cfg.walk,
        window=cfg.transformer.window,
        horizon=cfg.horizon,
        tf_ms=tf_ms,
    )


def _finish(
    tracker: Tracker,
    home: Path,
    data: SymbolData,
    cfg: EvalConfig,
    kind: str,
    rows: dict[str, np.ndarray],
    p_test: np.ndarray,
    files: dict,
    score_version,
    epoch_metrics: list[dict] | None = None,
) -> TrainResult:
    y_test = data.y_up[rows["test"]]
    base = float(data.y_up[rows["train"]].mean())
    metrics = summarize(y_test, p_test, base_rate=base)
    window = window_label(data.timestamps, rows)
    png = reliability_diagram(y_test, p_test, title=f"{data.symbol} {kind} (test window)")
    write_parquet_atomic(
        pl.DataFrame({"timestamp": data.timestamps[rows["test"]], "y_up": y_test, "p": p_test}),
        predictions_path(home, data.symbol, kind),
    )
    flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    flat |= {f"acc_at_{c}": v for c, v in metrics["acc_at_coverage"].items()}
    sizes = {k: int(len(v)) for k, v in rows.items()}
    published = publish_model(
        tracker,
        name=model_name(kind, data.symbol),
        run_name=f"{kind}-{data.symbol}",
        params={
            "symbol": data.symbol,
            "kind": kind,
            "window": window,
            "train_window": window_label(data.timestamps, {"test": rows["train"]}),
            "sizes": sizes,
            "config": cfg.to_dict(),
        },
        metrics=flat,
        files={**files, "plots/reliability.png": png},
        window=window,
        score_version=score_version,
        epoch_metrics=epoch_metrics,
        tags={"symbol": data.symbol, "kind": kind},
    )
    return TrainResult(
        symbol=data.symbol,
        kind=kind,
        version=published.version,
        window=window,
        metrics=metrics,
        decision=published.decision,
        run_url=published.run.url,
        reliability_png=png,
        sizes=sizes,
    )


def _meta(data: SymbolData, rows: dict[str, np.ndarray]) -> dict:
    """What a model was fitted on: the test window it was scored on and its training window
    (first/last bar open time, ms) - the reference the drift check compares recent bars with."""
    train = rows["train"]
    return {
        "symbol": data.symbol,
        "window": window_label(data.timestamps, rows),
        "train_start_ms": int(data.timestamps[train[0]]),
        "train_end_ms": int(data.timestamps[train[-1]]),
    }


def train_lgbm(
    tracker: Tracker, home: Path, data: SymbolData, cfg: EvalConfig, *, tf_ms: int
) -> TrainResult:
    rows = _layout(data, cfg, tf_ms)
    fit = fit_lgbm_rows(data.X, data.y_up, rows, cfg.lgbm, seed=cfg.seed)
    x_test, y_test = data.X[rows["test"]], data.y_up[rows["test"]]

    def score(version: str) -> float:
        booster, calibrator = load_lgbm(tracker, model_name("lgbm", data.symbol), version)
        return log_loss(y_test, calibrator.transform(predict_proba(booster, x_test)))

    meta = _meta(data, rows)
    files = lgbm_files(fit.booster, fit.calibrator, meta)
    return _finish(tracker, home, data, cfg, "lgbm", rows, fit.p["test"], files, score)


def train_deep(
    tracker: Tracker, home: Path, data: SymbolData, cfg: EvalConfig, *, tf_ms: int
) -> TrainResult:
    rows = _layout(data, cfg, tf_ms)
    fit = fit_deep_rows(
        data.X, data.y_up, data.fwd_ret, rows, cfg.transformer, **cfg.deep_kwargs(cfg.seed)
    )
    y_test = data.y_up[rows["test"]]

    def score(version: str) -> float:
        model, calibrator = load_deep(tracker, model_name("deep", data.symbol), version)
        mc = predict(model, data.X, rows["test"], n_samples=cfg.mc_samples, seed=cfg.seed)
        return log_loss(y_test, calibrator.transform(mc["p_up"]))

    meta = _meta(data, rows)
    files = deep_files(fit.model, fit.calibrator, meta)
    return _finish(
        tracker,
        home,
        data,
        cfg,
        "deep",
        rows,
        fit.p["test"],
        files,
        score,
        epoch_metrics=[{k: float(v) for k, v in h.items()} for h in fit.history],
    )


def fit_champion_ensemble(
    tracker: Tracker, home: Path, data: SymbolData, cfg: EvalConfig, *, tf_ms: int
) -> dict:
    """Ensemble weight of the two champions, fitted on the newest layout's validation bars and
    scored on its test bars; written to ``models/{symbol}/ensemble.json`` and returned."""
    rows = _layout(data, cfg, tf_ms)
    lg_name, dp_name = model_name("lgbm", data.symbol), model_name("deep", data.symbol)
    versions = {}
    p, conf = {}, {}
    for kind, name in (("lgbm", lg_name), ("deep", dp_name)):
        champ = tracker.champion(name)
        if champ is None:
            raise ValueError(f"no champion for {name}: materialize {kind} models first")
        versions[kind] = champ[0]
    booster, cal_l = load_lgbm(tracker, lg_name, versions["lgbm"])
    model, cal_d = load_deep(tracker, dp_name, versions["deep"])
    for part in ("val", "test"):
        p_l = cal_l.transform(predict_proba(booster, data.X[rows[part]]))
        mc = predict(model, data.X, rows[part], n_samples=cfg.mc_samples, seed=cfg.seed)
        p_d = cal_d.transform(mc["p_up"])
        p[part] = (p_l, p_d)
        conf[part] = (np.abs(2 * p_l - 1), deep_confidence(p_d, mc["epistemic_p"]))
    w = fit_ensemble_weight(*p["val"], data.y_up[rows["val"]])
    y_test = data.y_up[rows["test"]]
    p_e = combine(*p["test"], w, *conf["test"])
    result = {
        "symbol": data.symbol,
        "w_lgbm": w,
        "formula": ENSEMBLE_FORMULA,
        "lgbm_version": versions["lgbm"],
        "deep_version": versions["deep"],
        "fitted_on": window_label(data.timestamps, {"test": rows["val"]}),
        "test_window": window_label(data.timestamps, rows),
        "test_log_loss": {
            "lgbm": log_loss(y_test, p["test"][0]),
            "deep": log_loss(y_test, p["test"][1]),
            "ensemble": log_loss(y_test, p_e),
        },
    }
    write_text_atomic(json.dumps(result, indent=2), ensemble_weights_path(home, data.symbol))
    return result
