"""Fitting one model on one walk-forward layout: shared by the walk-forward evaluation and the
retraining assets, so a model is trained, calibrated and scored the same way in both.

``rows`` maps ``train``, ``val``, ``calib`` and ``test`` to row indices of one symbol's arrays
(window ends, i.e. the bar ``t`` each sample predicts from). The model is fitted on train with
early stopping on val and calibrated on calib; test is only predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np

from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.data.windows import labeled_ends, window_ends
from levibot_pipelines.core.evaluation.splits import (
    Fold,
    WalkForwardConfig,
    min_purge,
    walk_forward_splits,
)
from levibot_pipelines.core.models.calibration import Calibrator, fit_calibrator
from levibot_pipelines.core.models.inference import calibrated_outputs, margin
from levibot_pipelines.core.models.lgbm import LGBMConfig, fit_lgbm, predict_proba
from levibot_pipelines.core.models.transformer import LevibotTransformer, TransformerConfig
from levibot_pipelines.core.models.transformer_training import fit_transformer, predict

PARTS = ("train", "val", "calib", "test")
SCORED = ("val", "calib", "test")


def latest_fold(n_samples: int, cfg: WalkForwardConfig, *, required_purge: int = 0) -> Fold:
    """The fold whose test part ends with the newest sample: what a retrain fits on today."""
    # Fold 0 starts at sample 0 (and raises, with the numbers, if no fold fits): shift it so
    # that its test part ends at the newest sample.
    template = walk_forward_splits(n_samples, cfg, required_purge=required_purge)[0]
    shift = n_samples - cfg.span
    return Fold(
        index=0,
        **{k: getattr(template, k) + shift for k in PARTS},
    )


def fold_rows(samples: np.ndarray, fold: Fold) -> dict[str, np.ndarray]:
    """Row indices of each part of ``fold`` (``samples`` maps sample index -> row)."""
    return {k: samples[getattr(fold, k)] for k in PARTS}


@dataclass
class LgbmFit:
    booster: lgb.Booster
    calibrator: Calibrator
    p: dict[str, np.ndarray]  # calibrated P(up) on val, calib, test

    def confidence(self, part: str) -> np.ndarray:
        return margin(self.p[part])

    def gain_share(self) -> np.ndarray:
        """``(F,)`` float64: each feature's share of the booster's total split gain over its
        trees up to ``best_iteration`` (sums to 1); all 0 when no tree has a split."""
        gain = self.booster.feature_importance(importance_type="gain")
        total = float(gain.sum())
        return gain / total if total > 0 else np.zeros_like(gain)


def mean_gain_share(shares: list[np.ndarray]) -> np.ndarray:
    """``(F,)``: the mean of ``LgbmFit.gain_share`` over the folds whose booster has a split
    (so it sums to 1); all 0 when none has one. ``ValueError`` for an empty list."""
    if not shares:
        raise ValueError("mean_gain_share needs at least one fold's gain shares, got none")
    split = [s for s in shares if s.sum() > 0]
    return np.mean(split, axis=0) if split else np.zeros_like(shares[0])


@dataclass
class TransformerFit:
    model: LevibotTransformer
    history: list[dict]
    calibrator: Calibrator
    outputs: dict[str, dict[str, np.ndarray]]  # inference.calibrated_outputs on val, calib, test

    @property
    def p(self) -> dict[str, np.ndarray]:
        """Calibrated MC-mean P(up) per part."""
        return {k: v["p_up"] for k, v in self.outputs.items()}

    def confidence(self, part: str) -> np.ndarray:
        return self.outputs[part]["confidence"]


def fit_lgbm_rows(
    X: np.ndarray,
    y: np.ndarray,
    rows: dict[str, np.ndarray],
    cfg: LGBMConfig,
    *,
    seed: int,
    feature_names: Sequence[str] = FEATURE_COLUMNS,
) -> LgbmFit:
    """LightGBM on ``X`` ``(n, F)`` (NaN allowed) with ``feature_names`` naming its ``F``
    columns (default ``FEATURE_COLUMNS``)."""
    booster = fit_lgbm(
        X[rows["train"]],
        y[rows["train"]],
        X[rows["val"]],
        y[rows["val"]],
        cfg,
        seed=seed,
        feature_names=list(feature_names),
    )
    raw = {k: predict_proba(booster, X[rows[k]]) for k in SCORED}
    calibrator = fit_calibrator(raw["calib"], y[rows["calib"]])
    return LgbmFit(booster, calibrator, {k: calibrator.transform(v) for k, v in raw.items()})


def fit_transformer_rows(
    X: np.ndarray,
    y: np.ndarray,
    fwd_ret: np.ndarray,
    rows: dict[str, np.ndarray],
    config: TransformerConfig,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    max_train_samples: int | None,
    mc_samples: int,
    seed: int,
    precision: str = "fp32",
    on_epoch=None,
) -> TransformerFit:
    model, history = fit_transformer(
        X,
        y,
        fwd_ret,
        rows["train"],
        rows["val"],
        config,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        max_train_samples=max_train_samples,
        seed=seed,
        precision=precision,
        on_epoch=on_epoch,
    )
    mc = {k: predict(model, X, rows[k], n_samples=mc_samples, seed=seed) for k in SCORED}
    calibrator = fit_calibrator(mc["calib"]["p_up"], y[rows["calib"]])
    outputs = {k: calibrated_outputs(v, calibrator) for k, v in mc.items()}
    return TransformerFit(model, history, calibrator, outputs)


def latest_rows(
    timestamps: np.ndarray,
    y_up: np.ndarray,
    fwd_ret: np.ndarray,
    *,
    walk: WalkForwardConfig,
    window: int,
    horizon: int,
    tf_ms: int,
) -> dict[str, np.ndarray]:
    """Rows of the newest walk-forward layout of one symbol (the test part ends at the newest
    labelled bar): what the retraining assets fit on."""
    samples = labeled_ends(window_ends(timestamps, window, tf_ms), y_up, fwd_ret)
    fold = latest_fold(len(samples), walk, required_purge=min_purge(horizon, window))
    return fold_rows(samples, fold)


def window_label(timestamps: np.ndarray, rows: dict[str, np.ndarray]) -> str:
    """``first/last`` test bar open times (ms): the key champion comparisons are made on."""
    test = rows["test"]
    return f"{int(timestamps[test[0]])}/{int(timestamps[test[-1]])}"
