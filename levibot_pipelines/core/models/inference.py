"""One inference path for the two models and their ensemble, shared by the walk-forward, the
retraining assets, the publisher and the API's on-demand recompute, so a bar gets the same
numbers wherever it is predicted.

- LightGBM: calibrated ``P(up)`` and confidence ``|2p - 1|`` (``lgbm_outputs``).
- Transformer: one MC-dropout pass (``transformer_training.predict``), the calibrated ``P(up)``
  and the uncertainty decomposition (``transformer_outputs``, or ``calibrated_outputs`` on an
  MC pass already made).
- Ensemble: ``ensemble.combine`` with per-bar confidence weighting (``ensemble_outputs``).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from levibot_pipelines.core.models.calibration import Calibrator
from levibot_pipelines.core.models.ensemble import bar_weights, combine
from levibot_pipelines.core.models.lgbm import predict_proba
from levibot_pipelines.core.models.mc_dropout import MC_KEYS
from levibot_pipelines.core.models.transformer import LevibotTransformer
from levibot_pipelines.core.models.transformer_training import predict

# What ``calibrated_outputs`` and ``transformer_outputs`` return, each a float64 ``(m,)`` array:
# the MC-dropout statistics (p_up and confidence recomputed on the calibrated p) plus ``sigma``.
TRANSFORMER_KEYS = (*MC_KEYS, "sigma")


def margin(p_calibrated: np.ndarray) -> np.ndarray:
    """``|2p - 1|``: the direction margin of a calibrated probability, in [0, 1] (LightGBM's
    and the ensemble's confidence)."""
    return np.abs(2 * np.asarray(p_calibrated) - 1)


def transformer_confidence(p_calibrated: np.ndarray, epistemic_p: np.ndarray) -> np.ndarray:
    """``|2p - 1| * clip(1 - 2 std_p, 0, 1)`` on the calibrated probability (as ``mc_predict``
    defines it on the raw one): the margin, shrunk as the MC draws disagree."""
    return margin(p_calibrated) * np.clip(1 - 2 * np.sqrt(epistemic_p), 0, 1)


def lgbm_outputs(
    booster: lgb.Booster, calibrator: Calibrator, X: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated ``P(up)`` and its confidence for the feature rows ``X`` ``(m, F)``, each
    ``(m,)`` float64."""
    p = calibrator.transform(predict_proba(booster, X))
    return p, margin(p)


def calibrated_outputs(mc: dict[str, np.ndarray], calibrator: Calibrator) -> dict[str, np.ndarray]:
    """``TRANSFORMER_KEYS`` from one MC pass ``mc`` (``mc_predict``'s outputs, ``(m,)`` each).

    ``p_up`` is the calibrated MC-mean probability and ``confidence`` is taken on it
    (``transformer_confidence``); ``mu`` (log return), ``aleatoric`` (mean sigma^2), ``epistemic``
    (variance of mu), ``epistemic_p`` (variance of p) and ``total`` (aleatoric + epistemic)
    are the pass's; ``sigma = sqrt(total)`` is the predictive standard deviation of the return.
    """
    p = calibrator.transform(mc["p_up"])
    sigma, confidence = np.sqrt(mc["total"]), transformer_confidence(p, mc["epistemic_p"])
    out = {**mc, "p_up": p, "sigma": sigma, "confidence": confidence}
    return {k: out[k] for k in TRANSFORMER_KEYS}


def transformer_outputs(
    model: LevibotTransformer,
    calibrator: Calibrator,
    X: np.ndarray,
    ends: np.ndarray,
    *,
    n_samples: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """MC-dropout outputs (``TRANSFORMER_KEYS``) of the windows ending at rows ``ends`` ``(m,)``
    of ``X`` ``(n, F)``, with ``n_samples >= 1`` draws seeded by ``seed``."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1 for MC dropout, got {n_samples}")
    return calibrated_outputs(predict(model, X, ends, n_samples=n_samples, seed=seed), calibrator)


def ensemble_outputs(
    p_lgbm: np.ndarray,
    conf_lgbm: np.ndarray,
    p_tfm: np.ndarray,
    conf_tfm: np.ndarray,
    w: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p, confidence, w_bar)``, each ``(m,)``: the confidence-weighted ensemble probability
    (``ensemble.combine`` with LightGBM's global weight ``w`` in [0, 1]), its margin
    ``|2p - 1|`` and the per-bar LightGBM weight it mixed with (``ensemble.bar_weights``)."""
    p = combine(p_lgbm, p_tfm, w, conf_lgbm, conf_tfm)
    return p, margin(p), bar_weights(w, conf_lgbm, conf_tfm)
