"""Walk-forward evaluation of one symbol: LightGBM, Transformer, ensemble and baselines, all
scored on the same purged out-of-sample test windows.

Per fold (``splits.walk_forward_splits``): LightGBM is fitted on train with early stopping on
val; the Transformer likewise; each model's probabilities are calibrated on the calib window;
the ensemble weight is fitted on the calibrated val predictions; everything is then applied,
frozen, to the test window. Nothing fitted sees the test window or anything after it, and every
hyperparameter is fixed in ``EvalConfig`` before any data is seen (no tuning on test data).

Samples are the bars ``t`` whose ``window``-bar history is contiguous and whose label is known;
LightGBM sees the feature row at ``t``, the Transformer the window ending at ``t``, and both are
scored against the same label at ``t`` (``fwd_ret = log(close[t+h] / close[t])``).

Baselines on the same folds: ``base_rate`` (the train fold's up-frequency, constant),
``last_return`` (momentum: up when ``ret_1 > 0``) and ``reversal`` (the opposite rule), as the
calibrated probabilities of ``core.evaluation.rules`` with their strength from the train fold.

The models take ``data.columns`` (``core.evaluation.symbol_data``, whose ``SymbolData`` and
``symbol_data`` are re-exported here): LightGBM ``data.X`` (NaN allowed), the Transformer
``data.X_deep``. ``feature_importance``: LightGBM's gain share per column, mean over the folds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import check_int
from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.data.windows import labeled_ends, window_ends
from levibot_pipelines.core.evaluation.fitting import (
    LgbmFit,
    TransformerFit,
    fit_lgbm_rows,
    fit_transformer_rows,
    fold_rows,
    mean_gain_share,
)
from levibot_pipelines.core.evaluation.rules import (
    reversal_probability,
    rule_probability,
    rule_strength,
)
from levibot_pipelines.core.evaluation.skill import skill_scores
from levibot_pipelines.core.evaluation.splits import (
    Fold,
    WalkForwardConfig,
    min_purge,
    splits_from,
)
from levibot_pipelines.core.evaluation.symbol_data import SymbolData
from levibot_pipelines.core.evaluation.symbol_data import symbol_data as symbol_data  # re-export
from levibot_pipelines.core.metrics import brier, picp, risk_coverage, summarize
from levibot_pipelines.core.models.ensemble import fit_ensemble_weight
from levibot_pipelines.core.models.inference import ensemble_outputs
from levibot_pipelines.core.models.lgbm import LGBMConfig
from levibot_pipelines.core.models.transformer import TransformerConfig

MODELS = ("lgbm", "deep", "ensemble", "base_rate", "last_return", "reversal")
SKILL_MODELS = ("lgbm", "deep", "ensemble", "last_return", "reversal")  # base_rate: no ranking
RET_1 = FEATURE_COLUMNS.index("ret_1")


@dataclass(frozen=True)
class EvalConfig:
    """Everything the walk-forward fits with, fixed before the data is seen.

    ``walk`` (fold layout), ``horizon`` (label horizon in bars), ``epochs`` (maximum
    Transformer epochs per fold) and ``mc_samples`` (MC-dropout draws per bar, >= 1) have no
    default and are keyword-only: the callers pass the configured values (settings
    ``LEVIBOT_WALK`` with ``LEVIBOT_PURGE``, ``LEVIBOT_LABEL_HORIZON``, ``LEVIBOT_EPOCHS``,
    ``LEVIBOT_MC_SAMPLES``)."""

    transformer: TransformerConfig
    walk: WalkForwardConfig = field(kw_only=True)
    lgbm: LGBMConfig = field(default_factory=LGBMConfig)
    horizon: int = field(kw_only=True)
    epochs: int = field(kw_only=True)
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 2
    max_train_samples: int | None = 8_000
    mc_samples: int = field(kw_only=True)
    max_folds: int | None = None  # evaluate only the most recent folds (None: all)
    seed: int = 0
    test_from_ms: int | None = None  # first test part starts at this bar time (None: anywhere)
    precision: str = "fp32"  # the Transformer's, resolved: fp32 or bf16 (core.models.precision)

    def __post_init__(self) -> None:
        check_int("horizon", self.horizon, 1)
        check_int("mc_samples", self.mc_samples, 1)

    def to_dict(self) -> dict:
        return asdict(self)

    def transformer_kwargs(self, seed: int) -> dict:
        """Keyword arguments of ``core.evaluation.fitting.fit_transformer_rows`` from this
        configuration."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "patience": self.patience,
            "max_train_samples": self.max_train_samples,
            "mc_samples": self.mc_samples,
            "seed": seed,
            "precision": self.precision,
        }


@dataclass
class SymbolEvaluation:
    symbol: str
    predictions: pl.DataFrame  # one row per test bar: labels, every model's p, deep mu/sigma
    folds: list[dict]
    metrics: dict[str, dict] = field(default_factory=dict)
    # The same columns on each fold's val and calib bars, plus ``part``: what the decision
    # engine chooses on (``core.evaluation.decision_walk``), never the test bars.
    selection: pl.DataFrame | None = None
    # LightGBM's gain share per feature (``data.columns`` order), mean over the folds.
    feature_importance: dict[str, float] = field(default_factory=dict)


def _fold_predictions(
    data: SymbolData,
    fold_index: int,
    rows: dict[str, np.ndarray],
    lg: LgbmFit,
    dp: TransformerFit,
    w: float,
    part: str = "test",
) -> pl.DataFrame:
    """One row per bar of a fold's ``part`` (default the test part): label, every model's p
    (``MODELS``), the Transformer's uncertainty and the members' confidences."""
    X, y, test_rows = data.X, data.y_up, rows[part]
    test = dp.outputs[part]
    conf_l = lg.confidence(part)
    p_e, _, _ = ensemble_outputs(lg.p[part], conf_l, test["p_up"], test["confidence"], w)
    y_train = y[rows["train"]]
    base = float(y_train.mean())
    ret_1 = data.columns.index("ret_1")  # RET_1 unless the caller chose other columns
    strength = rule_strength(X[rows["train"], ret_1], y_train)
    ret_test = X[test_rows, ret_1]
    return pl.DataFrame(
        {
            "timestamp": data.timestamps[test_rows],
            "fold": np.full(len(test_rows), fold_index, dtype=np.int32),
            "y_up": y[test_rows],
            "fwd_ret": data.fwd_ret[test_rows],
            "p_lgbm": lg.p[part],
            "p_deep": test["p_up"],
            "p_ensemble": p_e,
            "p_base_rate": np.full(len(test_rows), base),
            "p_last_return": rule_probability(ret_test, strength, +1.0),
            "p_reversal": reversal_probability(ret_test, strength),
            "train_base_rate": np.full(len(test_rows), base),
            "mu": test["mu"],
            "sigma": test["sigma"],
            "aleatoric": test["aleatoric"],
            "epistemic": test["epistemic"],
            "epistemic_p": test["epistemic_p"],
            "conf_lgbm": conf_l,
            "conf_deep": test["confidence"],
        }
    )


def _fold_summary(
    data: SymbolData,
    fold: Fold,
    rows: dict[str, np.ndarray],
    lg: LgbmFit,
    dp: TransformerFit,
    w: float,
) -> dict:
    """What was fitted in a fold (trees, calibration methods, epochs, weight) and its test span."""
    return {
        **fold.as_dict(),
        "test_start_ms": int(data.timestamps[rows["test"][0]]),
        "test_end_ms": int(data.timestamps[rows["test"][-1]]),
        "lgbm_trees": int(lg.booster.current_iteration()),
        "lgbm_calibration": lg.calibrator.method,
        "deep_calibration": dp.calibrator.method,
        "deep_epochs": len(dp.history),
        "deep_best_val_loss": float(min(h["val_loss"] for h in dp.history)),
        "ensemble_weight_lgbm": float(w),
    }


def evaluate_symbol(
    data: SymbolData,
    cfg: EvalConfig,
    *,
    tf_ms: int,
    progress: Callable[[str], None] | None = None,
) -> SymbolEvaluation:
    """Run the purged walk-forward for one symbol and score every model on the test windows."""
    say = progress or (lambda _msg: None)
    window = cfg.transformer.window
    samples = labeled_ends(window_ends(data.timestamps, window, tf_ms), data.y_up, data.fwd_ret)
    folds = splits_from(
        data.timestamps[samples],
        cfg.walk,
        required_purge=min_purge(cfg.horizon, window),
        test_from_ms=cfg.test_from_ms,
        what=data.symbol,
    )
    if cfg.max_folds is not None:
        folds = folds[-cfg.max_folds :]
    X, y, X_deep = data.X, data.y_up, data.X_deep
    parts_out: list[pl.DataFrame] = []
    selection: list[pl.DataFrame] = []
    fold_info: list[dict] = []
    gains: list[np.ndarray] = []
    for fold in folds:
        started = time.perf_counter()
        rows = fold_rows(samples, fold)
        seed = cfg.seed + fold.index
        lg = fit_lgbm_rows(X, y, rows, cfg.lgbm, seed=seed, feature_names=data.columns)
        gains.append(lg.gain_share())
        dp = fit_transformer_rows(
            X_deep, y, data.fwd_ret, rows, cfg.transformer, **cfg.transformer_kwargs(seed)
        )
        w = fit_ensemble_weight(lg.p["val"], dp.p["val"], y[rows["val"]])
        parts_out.append(_fold_predictions(data, fold.index, rows, lg, dp, w))
        selection += [
            _fold_predictions(data, fold.index, rows, lg, dp, w, part).with_columns(
                part=pl.lit(part)
            )
            for part in ("val", "calib")
        ]
        info = _fold_summary(data, fold, rows, lg, dp, w)
        info["seconds"] = round(time.perf_counter() - started, 2)
        fold_info.append(info)
        say(
            f"{data.symbol}: fold {fold.index + 1}/{len(folds)} done in "
            f"{info['seconds']:.1f}s (w_lgbm={w:.2f})"
        )
    predictions = pl.concat(parts_out)
    return SymbolEvaluation(
        symbol=data.symbol,
        predictions=predictions,
        folds=fold_info,
        metrics=score_predictions(predictions),
        selection=pl.concat(selection),
        feature_importance={
            c: float(v) for c, v in zip(data.columns, mean_gain_share(gains), strict=True)
        },
    )


def score_predictions(pred: pl.DataFrame) -> dict[str, dict]:
    """Metrics of every model on the pooled test predictions.

    BSS uses each bar's own train-fold base rate as the reference forecast. The Transformer also
    gets PICP of its predictive sigma at 50% and 90%. Each of ``SKILL_MODELS`` gets ``skill``
    (``core.evaluation.skill.skill_scores`` against ``fwd_ret``: IC, deciles, quantile-bin ECE,
    paired differences, block-bootstrapped over the test bars in time order).
    """
    y = pred.get_column("y_up").to_numpy()
    reference = brier(y, pred.get_column("train_base_rate").to_numpy())
    out: dict[str, dict] = {}
    for name in MODELS:
        p = pred.get_column(f"p_{name}").to_numpy()
        conf = pred.get_column(f"conf_{name}").to_numpy() if name in ("lgbm", "deep") else None
        m = summarize(y, p, base_rate=float(y.mean()), confidence=conf)
        m["bss"] = 1.0 - brier(y, p) / reference if reference > 0 else float("nan")
        out[name] = m
    ret, mu, sigma = (pred.get_column(c).to_numpy() for c in ("fwd_ret", "mu", "sigma"))
    out["deep"]["picp"] = {str(lv): picp(ret, mu, sigma, lv) for lv in (0.5, 0.9)}
    scores = {name: pred.get_column(f"p_{name}").to_numpy() for name in SKILL_MODELS}
    for name, skill in skill_scores(y, ret, scores).items():
        out[name]["skill"] = skill
    return out


def risk_coverage_curves(pred: pl.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    y = pred.get_column("y_up").to_numpy()
    curves = {}
    for name in ("lgbm", "deep", "ensemble"):
        p = pred.get_column(f"p_{name}").to_numpy()
        conf = pred.get_column(f"conf_{name}").to_numpy() if name != "ensemble" else None
        curves[name] = risk_coverage(y, p, confidence=conf)
    return curves
