"""Combine two calibrated ``P(up)`` forecasts: LightGBM ``p_a`` and the Transformer ``p_b``.

A global weight ``w`` for ``p_a`` is fitted per symbol on VALIDATION predictions (never on the
test fold) by ``fit_ensemble_weight``. At prediction time ``combine`` optionally tilts it per bar
by each member's confidence in [0, 1]:

    w_t = w * (conf_a_t + eps) / (w * (conf_a_t + eps) + (1 - w) * (conf_b_t + eps))
    p_t = w_t * p_a_t + (1 - w_t) * p_b_t

``eps`` keeps ``w_t`` defined when both confidences are 0. With equal confidences ``w_t = w``;
with ``w = 1`` (or 0) the result is ``p_a`` (or ``p_b``) whatever the confidences. Without
confidences the result is the plain mix ``w * p_a + (1 - w) * p_b``. Either way ``p_t`` is a
convex combination, so it lies between ``p_a_t`` and ``p_b_t``.
"""

from __future__ import annotations

import numpy as np

from levibot_pipelines.core.checks import (
    check_int,
    check_labels,
    check_probabilities,
    check_same_length,
)
from levibot_pipelines.core.metrics import log_loss


def _mix(a: np.ndarray, b: np.ndarray, w: float | np.ndarray) -> np.ndarray:
    # Clip only guards against a one-ulp overshoot of [0, 1] from floating-point rounding.
    return np.clip(w * a + (1.0 - w) * b, 0.0, 1.0)


def fit_ensemble_weight(
    p_a: object, p_b: object, y: object, grid: int = 101, *, admit_b_if_better: bool = True
) -> float:
    """Weight ``w`` in [0, 1] of ``p_a`` minimizing the log loss of ``w * p_a + (1 - w) * p_b``.

    Fit on VALIDATION predictions of both (already calibrated) members, shape (n,) each, with
    ``y`` the realized 0/1 directions. ``w`` is searched on ``grid`` uniform points of [0, 1]
    (default 101, step 0.01); on ties the smallest ``w`` wins.

    ``admit_b_if_better`` (default): ``p_b`` (the Transformer) is admitted only when its own log
    loss on these bars is below ``p_a``'s (LightGBM's); otherwise ``w = 1``, ``p_a`` alone. A
    member no better than LightGBM on validation would otherwise enter through a mixing gain of
    a few 1e-5 in log loss, and its weight swing from fold to fold on noise.
    """
    check_int("grid", grid, 2)
    a, b, y_arr = check_probabilities(p_a, "p_a"), check_probabilities(p_b, "p_b"), check_labels(y)
    check_same_length(p_a=a, p_b=b, y=y_arr)
    if admit_b_if_better and not log_loss(y_arr, b) < log_loss(y_arr, a):
        return 1.0
    weights = np.linspace(0.0, 1.0, grid)
    losses = [log_loss(y_arr, _mix(a, b, w)) for w in weights]
    return float(weights[int(np.argmin(losses))])


def combine(
    p_a: object,
    p_b: object,
    w: float,
    conf_a: object | None = None,
    conf_b: object | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """Ensemble probability per bar, shape (n,), as in the module docstring.

    ``p_a``, ``p_b`` in [0, 1]; ``w`` in [0, 1] from ``fit_ensemble_weight``; ``conf_a`` and
    ``conf_b`` (in [0, 1], e.g. ``1 - normalized uncertainty``) must be given together or not
    at all; ``eps > 0`` (default 1e-6).
    """
    a, b = check_probabilities(p_a, "p_a"), check_probabilities(p_b, "p_b")
    check_same_length(p_a=a, p_b=b)
    if not (np.isfinite(w) and 0.0 <= w <= 1.0):
        raise ValueError(f"w must be in [0, 1], got {w}")
    if (conf_a is None) != (conf_b is None):
        missing = "conf_b" if conf_b is None else "conf_a"
        raise ValueError(f"conf_a and conf_b must be given together, {missing} is None")
    if conf_a is None:
        return _mix(a, b, w)
    if not (np.isfinite(eps) and eps > 0.0):
        raise ValueError(f"eps must be positive, got {eps}")
    ca, cb = check_probabilities(conf_a, "conf_a"), check_probabilities(conf_b, "conf_b")
    check_same_length(p_a=a, conf_a=ca, conf_b=cb)
    return _mix(a, b, bar_weights(w, ca, cb, eps))


def bar_weights(w: float, conf_a: np.ndarray, conf_b: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-bar weight of model ``a``, shape (n,), what ``combine`` mixes with:
    ``w_t = w (c_a + eps) / (w (c_a + eps) + (1 - w) (c_b + eps))``."""
    num = w * (np.asarray(conf_a, dtype=np.float64) + eps)
    return num / (num + (1.0 - w) * (np.asarray(conf_b, dtype=np.float64) + eps))
