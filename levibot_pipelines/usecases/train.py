"""Retraining operations behind the model assets: fit on the newest walk-forward layout, score
on its test window, package, register in MLflow, and place the new version like for like
(``usecases.promote``: the new version's ``log_loss`` on its test window against the champion's
on that same window). A version that passes becomes the champion when there is none, else the
shadow ``challenger``: published beside the champion, never traded, promoted only when it beats
the champion live (``usecases.shadow_promotion``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from levibot_pipelines.adapters.home import predictions_path
from levibot_pipelines.adapters.plots import reliability_diagram
from levibot_pipelines.adapters.registry import (
    lgbm_files,
    load_lgbm,
    load_transformer,
    model_name,
    register_model,
    transformer_files,
)
from levibot_pipelines.adapters.store import write_parquet_atomic
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.evaluation.fitting import (
    fit_lgbm_rows,
    fit_transformer_rows,
    latest_rows,
    window_label,
)
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig, SymbolData
from levibot_pipelines.core.metrics import log_loss, summarize
from levibot_pipelines.core.models.inference import lgbm_outputs, transformer_outputs
from levibot_pipelines.usecases.promote import DECISION_METRIC, promote_champion

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """One retrained model version: its test-window ``metrics`` (``core.metrics.summarize``),
    the promotion ``decision`` (``usecases.promote``), its MLflow run page, its reliability
    diagram (PNG bytes) and the row count of each part of the layout (``sizes``)."""

    symbol: str
    kind: str
    version: str
    window: str
    metrics: dict
    decision: dict
    run_url: str
    reliability_png: bytes
    sizes: dict[str, int] = field(default_factory=dict)


def newest_layout(data: SymbolData, cfg: EvalConfig, tf_ms: int) -> dict[str, np.ndarray]:
    """Row indices of the newest walk-forward layout (``train``/``val``/``calib``/``test``) of
    ``data``: what the retraining assets fit and score on."""
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
    score_version: Callable[[str], float],
    epoch_metrics: list[dict] | None = None,
) -> TrainResult:
    """Score ``p_test`` (the fitted model's calibrated P(up) on ``rows["test"]``), keep those
    test predictions, register the version with ``files`` and its reliability diagram, and place
    it like for like: champion when there is none, else challenger (``score_version``: see
    ``usecases.promote.promote_champion``)."""
    y_test = data.y_up[rows["test"]]
    metrics = summarize(y_test, p_test, base_rate=float(data.y_up[rows["train"]].mean()))
    window = window_label(data.timestamps, rows)
    sizes = {k: int(len(v)) for k, v in rows.items()}
    png = reliability_diagram(y_test, p_test, title=f"{data.symbol} {kind} (test window)")
    write_parquet_atomic(
        pl.DataFrame({"timestamp": data.timestamps[rows["test"]], "y_up": y_test, "p": p_test}),
        predictions_path(home, data.symbol, kind),
    )
    name = model_name(kind, data.symbol)
    registered = register_model(
        tracker,
        name=name,
        run_name=f"{kind}-{data.symbol}",
        params=_run_params(data, cfg, kind, rows, sizes),
        metrics=_flat_metrics(metrics),
        files={**files, "plots/reliability.png": png},
        window=window,
        epoch_metrics=epoch_metrics,
        tags={"symbol": data.symbol, "kind": kind},
    )
    decision = promote_champion(
        tracker,
        name,
        registered.version,
        value=metrics[DECISION_METRIC],
        window=window,
        score_version=score_version,
        shadow=True,
    )
    return TrainResult(
        symbol=data.symbol,
        kind=kind,
        version=registered.version,
        window=window,
        metrics=metrics,
        decision=decision,
        run_url=registered.run.url,
        reliability_png=png,
        sizes=sizes,
    )


def _run_params(
    data: SymbolData,
    cfg: EvalConfig,
    kind: str,
    rows: dict[str, np.ndarray],
    sizes: dict[str, int],
) -> dict:
    """The training run's params: what was fitted, on which windows, with which config."""
    return {
        "symbol": data.symbol,
        "kind": kind,
        "window": window_label(data.timestamps, rows),
        "train_window": window_label(data.timestamps, {"test": rows["train"]}),
        "sizes": sizes,
        "config": cfg.to_dict(),
        **({"precision": cfg.precision} if kind == "deep" else {}),  # fp32 or bf16 autocast
    }


def _flat_metrics(metrics: dict) -> dict[str, float]:
    """``summarize``'s metrics as MLflow scalars: ``acc_at_coverage`` becomes ``acc_at_{c}``."""
    flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    return flat | {f"acc_at_{c}": v for c, v in metrics["acc_at_coverage"].items()}


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
    rows = newest_layout(data, cfg, tf_ms)
    fit = fit_lgbm_rows(data.X, data.y_up, rows, cfg.lgbm, seed=cfg.seed)
    x_test, y_test = data.X[rows["test"]], data.y_up[rows["test"]]

    def score(version: str) -> float:
        booster, calibrator = load_lgbm(tracker, model_name("lgbm", data.symbol), version)
        return log_loss(y_test, lgbm_outputs(booster, calibrator, x_test)[0])

    meta = _meta(data, rows)
    files = lgbm_files(fit.booster, fit.calibrator, meta)
    return _finish(tracker, home, data, cfg, "lgbm", rows, fit.p["test"], files, score)


def train_transformer(
    tracker: Tracker, home: Path, data: SymbolData, cfg: EvalConfig, *, tf_ms: int
) -> TrainResult:
    rows = newest_layout(data, cfg, tf_ms)
    fit = fit_transformer_rows(
        data.X, data.y_up, data.fwd_ret, rows, cfg.transformer, **cfg.transformer_kwargs(cfg.seed)
    )
    y_test = data.y_up[rows["test"]]

    def score(version: str) -> float:
        model, calibrator = load_transformer(tracker, model_name("deep", data.symbol), version)
        out = transformer_outputs(
            model.set_precision(cfg.precision),  # like for like with the new version's score
            calibrator,
            data.X,
            rows["test"],
            n_samples=cfg.mc_samples,
            seed=cfg.seed,
        )
        return log_loss(y_test, out["p_up"])

    meta = _meta(data, rows)
    files = transformer_files(fit.model, fit.calibrator, meta)
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
