"""Retraining operations behind the model assets: fit on the newest walk-forward layout, score
on its test window, package, register in MLflow, and move the champion like for like.

Champion promotion: the new version's ``log_loss`` on its test window is compared with the
champion's on that same window (the champion is scored there first when it never was); the rule
is ``core.evaluation.champion.champion_should_move``, the tracker only reads and writes the
alias and the version tags (the decision and the values compared).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from levibot_pipelines.adapters.home import ensemble_weights_path, predictions_path
from levibot_pipelines.adapters.plots import reliability_diagram
from levibot_pipelines.adapters.registry import (
    deep_files,
    lgbm_files,
    load_deep,
    load_lgbm,
    model_name,
    register_model,
)
from levibot_pipelines.adapters.store import write_parquet_atomic, write_text_atomic
from levibot_pipelines.adapters.tracking import WINDOW_TAG, Tracker, recorded_evaluation
from levibot_pipelines.core.evaluation.champion import champion_should_move
from levibot_pipelines.core.evaluation.fitting import (
    fit_deep_rows,
    fit_lgbm_rows,
    latest_rows,
    window_label,
)
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig, SymbolData
from levibot_pipelines.core.metrics import log_loss, summarize
from levibot_pipelines.core.models.ensemble import fit_ensemble_weight
from levibot_pipelines.core.models.inference import (
    ensemble_outputs,
    lgbm_outputs,
    transformer_outputs,
)

log = logging.getLogger(__name__)
# Lower log loss on the same test window is what a champion has to beat.
DECISION_METRIC = "log_loss"
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
    score_version: Callable[[str], float],
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
    name = model_name(kind, data.symbol)
    registered = register_model(
        tracker,
        name=name,
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
        return log_loss(y_test, lgbm_outputs(booster, calibrator, x_test)[0])

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
        out = transformer_outputs(
            model, calibrator, data.X, rows["test"], n_samples=cfg.mc_samples, seed=cfg.seed
        )
        return log_loss(y_test, out["p_up"])

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


def _champion_versions(tracker: Tracker, symbol: str) -> dict[str, str]:
    """``{"lgbm": version, "deep": version}`` of the champions of ``symbol``."""
    versions = {}
    for kind in ("lgbm", "deep"):
        champ = tracker.champion(model_name(kind, symbol))
        if champ is None:
            raise ValueError(
                f"no champion for {model_name(kind, symbol)}: materialize {kind} models first"
            )
        versions[kind] = champ[0]
    return versions


def fit_champion_ensemble(
    tracker: Tracker, home: Path, data: SymbolData, cfg: EvalConfig, *, tf_ms: int
) -> dict:
    """Ensemble weight of the two champions, fitted on the newest layout's validation bars and
    scored on its test bars; written to ``models/{symbol}/ensemble.json`` and returned."""
    rows = _layout(data, cfg, tf_ms)
    versions = _champion_versions(tracker, data.symbol)
    booster, cal_l = load_lgbm(tracker, model_name("lgbm", data.symbol), versions["lgbm"])
    model, cal_d = load_deep(tracker, model_name("deep", data.symbol), versions["deep"])
    p, conf = {}, {}
    for part in ("val", "test"):
        p_l, c_l = lgbm_outputs(booster, cal_l, data.X[rows[part]])
        deep = transformer_outputs(
            model, cal_d, data.X, rows[part], n_samples=cfg.mc_samples, seed=cfg.seed
        )
        p[part], conf[part] = (p_l, deep["p_up"]), (c_l, deep["confidence"])
    w = fit_ensemble_weight(*p["val"], data.y_up[rows["val"]])
    y_test = data.y_up[rows["test"]]
    p_e, _, _ = ensemble_outputs(p["test"][0], conf["test"][0], p["test"][1], conf["test"][1], w)
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


def promote_champion(
    tracker: Tracker,
    name: str,
    version: str,
    *,
    value: float,
    window: str,
    score_version: Callable[[str], float],
) -> dict[str, Any]:
    """Move ``champion`` of ``name`` to ``version`` only if its ``log_loss`` ``value`` on test
    ``window`` is no worse than the champion's on that same window.

    ``score_version(version)`` computes a registered version's log loss on ``window`` (the
    caller loads it and predicts the same bars); the champion is scored here when it has no
    value recorded for this window yet, so the comparison is always like for like.
    """
    current = tracker.champion(name)
    if current is not None and current[0] != version:
        champion_version, champion_tags = current
        if recorded_evaluation(champion_tags, metric=DECISION_METRIC, window=window) is None:
            tracker.record_evaluation(
                name,
                champion_version,
                metric=DECISION_METRIC,
                window=window,
                value=score_version(champion_version),
            )
    decision = promote_if_no_worse(
        tracker,
        name,
        version,
        metric=DECISION_METRIC,
        value=value,
        higher_is_better=False,
        window=window,
    )
    log.info("%s v%s: %s", name, version, decision["reason"])
    return decision


def promote_if_no_worse(
    tracker: Tracker,
    model_name: str,
    version: str,
    *,
    metric: str,
    value: float,
    higher_is_better: bool,
    window: str,
) -> dict[str, Any]:
    """Record ``version``'s ``metric`` ``value`` on test ``window`` and move ``champion`` to it
    when ``champion_should_move`` says so (the champion's value must be recorded on the same
    window; see ``core.evaluation.champion``).

    The value is recorded on the version (tags ``window`` and ``eval_tag(metric, window)``), and
    so is the decision: tags ``decision``, ``promoted``, ``compared_to_version``,
    ``champion_value`` and ``new_value`` (``""`` when absent). Returns ``{promoted, reason,
    champion_version, new_version, champion_value, new_value}``, where ``champion_version`` and
    ``champion_value`` describe the champion compared against (``None`` when there was none).
    """
    version, value = str(version), float(value)
    tracker.record_evaluation(model_name, version, metric=metric, window=window, value=value)
    tracker.tag_version(model_name, version, {WINDOW_TAG: window})
    current = tracker.champion(model_name)
    champion_version: str | None = None
    champion_value: float | None = None
    if current is not None and current[0] != version:
        champion_version, champion_tags = current
        champion_value = recorded_evaluation(champion_tags, metric=metric, window=window)
        if champion_value is None:
            log.info(
                "%s: champion v%s has no %s on window %s (its window: %s)",
                model_name,
                champion_version,
                metric,
                window,
                champion_tags.get(WINDOW_TAG),
            )
    decision = champion_should_move(
        value,
        champion_value,
        metric=metric,
        higher_is_better=higher_is_better,
        new_version=version,
        champion_version=None if current is None else current[0],
    )
    if decision.promoted:
        tracker.set_champion(model_name, version)
    tracker.tag_version(
        model_name,
        version,
        {
            "decision": decision.reason,
            "promoted": str(decision.promoted).lower(),
            "compared_to_version": champion_version or "",
            "champion_value": "" if champion_value is None else repr(champion_value),
            "new_value": repr(value),
        },
    )
    log.info("%s v%s on %s: %s", model_name, version, window, decision.reason)
    return {
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion_version": champion_version,
        "new_version": version,
        "champion_value": champion_value,
        "new_value": value,
    }
