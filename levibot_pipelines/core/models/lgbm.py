"""LightGBM direction classifier: P(close(t+h) > close(t)) from the feature row at ``t``.

Fitted on a walk-forward fold's train part with early stopping on its validation part (see
``core.evaluation.splits``); the raw probabilities are calibrated downstream on the calibration
part.
Models are stored in LightGBM's text format, never pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from levibot_pipelines.core.checks import check_min


@dataclass(frozen=True)
class LGBMConfig:
    """Hyper-parameters of the gradient-boosted direction classifier.

    Defaults are deliberately conservative for noisy 15m returns: small trees
    (``num_leaves=15``), a slow ``learning_rate=0.03``, up to ``n_estimators=500`` rounds cut by
    ``early_stopping_rounds=50`` rounds without a lower validation log loss, large leaves
    (``min_child_samples=200``), row/column subsampling (``feature_fraction=0.8``,
    ``bagging_fraction=0.8`` every ``bagging_freq=1`` round), L2 leaf penalty ``lambda_l2=1.0``
    and ``num_threads=2``.
    """

    num_leaves: int = 15
    learning_rate: float = 0.03
    n_estimators: int = 500
    min_child_samples: int = 200
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    early_stopping_rounds: int = 50
    num_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("n_estimators", "min_child_samples", "early_stopping_rounds"):
            check_min(name, getattr(self, name), 1)
        check_min("num_leaves", self.num_leaves, 2)
        for name in ("feature_fraction", "bagging_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        if self.learning_rate <= 0.0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.bagging_freq < 0 or self.lambda_l2 < 0.0 or self.num_threads < 0:
            raise ValueError(
                f"bagging_freq, lambda_l2 and num_threads must be >= 0, got {self.bagging_freq!r}, "
                f"{self.lambda_l2!r}, {self.num_threads!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (for tracking and config JSON)."""
        return asdict(self)


def _params(cfg: LGBMConfig, seed: int) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": "binary_logloss",
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_child_samples": cfg.min_child_samples,
        "feature_fraction": cfg.feature_fraction,
        "bagging_fraction": cfg.bagging_fraction,
        "bagging_freq": cfg.bagging_freq,
        "lambda_l2": cfg.lambda_l2,
        "num_threads": cfg.num_threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


def _features(name: str, X: np.ndarray, n_features: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n, F), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, expected {n_features}")
    return X


def _labels(name: str, y: np.ndarray, n_rows: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n_rows,):
        raise ValueError(f"{name} must have shape ({n_rows},) to match its X, got {y.shape}")
    n_nan = int(np.isnan(y).sum())
    if n_nan:
        raise ValueError(f"{name} has {n_nan} NaN labels; drop unlabelled rows first")
    bad = np.unique(y[(y != 0.0) & (y != 1.0)])
    if bad.size:
        raise ValueError(f"{name} must be 0/1 direction labels, got values {bad[:5].tolist()}")
    return y


def fit_lgbm(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    cfg: LGBMConfig,
    *,
    seed: int = 0,
    feature_names: Sequence[str] | None = None,
) -> lgb.Booster:
    """Fit a binary LightGBM classifier with early stopping on validation log loss.

    Args:
        X_train: (n_train, F) float features; NaN is allowed (LightGBM's missing-value branch).
        y_train: (n_train,) direction labels in {0, 1} (1 = close(t+h) > close(t)); no NaN.
        X_val: (n_val, F) validation features, from a later, purged stretch of time.
        y_val: (n_val,) validation labels in {0, 1}; used only for early stopping.
        cfg: hyper-parameters.
        seed: seeds bagging and feature subsampling; with ``deterministic=True`` and
            ``force_row_wise=True`` the same inputs and seed give the same model.
        feature_names: F names stored in the model (default ``Column_0`` ...).

    Returns:
        The booster truncated to ``best_iteration``, the round of lowest validation log loss
        (training stops ``early_stopping_rounds`` rounds after it, or at ``n_estimators``).
    """
    X_train = _features("X_train", X_train)
    X_val = _features("X_val", X_val, X_train.shape[1])
    y_train = _labels("y_train", y_train, X_train.shape[0])
    y_val = _labels("y_val", y_val, X_val.shape[0])
    names = "auto"
    if feature_names is not None:
        names = [str(n) for n in feature_names]
        if len(names) != X_train.shape[1]:
            raise ValueError(
                f"feature_names has {len(names)} names, expected {X_train.shape[1]} (columns of X)"
            )
    train_set = lgb.Dataset(X_train, label=y_train, feature_name=names, free_raw_data=True)
    val_set = lgb.Dataset(X_val, label=y_val, reference=train_set)
    return lgb.train(
        _params(cfg, seed),
        train_set,
        num_boost_round=cfg.n_estimators,
        valid_sets=[val_set],
        valid_names=["val"],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )


def _best(booster: lgb.Booster) -> int | None:
    return booster.best_iteration if booster.best_iteration > 0 else None


def predict_proba(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """Raw (uncalibrated) P(up) for each row of ``X``, shape (n, F) -> (n,) float64.

    Uses the trees up to ``best_iteration`` when it is set (all trees of a booster loaded from
    text, which holds only those).
    """
    X = _features("X", X, booster.num_feature())
    return np.asarray(booster.predict(X, num_iteration=_best(booster)), dtype=np.float64)


def booster_to_text(booster: lgb.Booster) -> str:
    """LightGBM's text model format, truncated at ``best_iteration`` (no pickle)."""
    return booster.model_to_string(num_iteration=_best(booster) or -1)


def booster_from_text(text: str) -> lgb.Booster:
    """Rebuild a booster from ``booster_to_text`` output."""
    if not text.startswith("tree"):
        raise ValueError(f"not a LightGBM text model (starts with {text[:20]!r})")
    return lgb.Booster(model_str=text)


def feature_importance(booster: lgb.Booster) -> dict[str, float]:
    """Total split gain per feature name, over the trees up to ``best_iteration``."""
    gains = booster.feature_importance(importance_type="gain", iteration=_best(booster))
    return {name: float(g) for name, g in zip(booster.feature_name(), gains, strict=True)}
