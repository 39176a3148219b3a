"""Probability calibration of ``P(up)`` forecasts: identity, Platt scaling or isotonic regression.

A ``Calibrator`` holds only plain floats and lists, so it round-trips through JSON
(``to_dict`` / ``from_dict``) and nothing is ever pickled. ``fit_calibrator`` is fitted on a
calibration window that comes after (and is purged from) the model's training window; the
arrays it receives are in bar order, and ``method="auto"`` chooses a method inside that window
without looking outside it.

References:
- Platt (1999), "Probabilistic Outputs for Support Vector Machines and Comparisons to
  Regularized Likelihood Methods".
- Zadrozny & Elkan (2002), "Transforming Classifier Scores into Accurate Multiclass Probability
  Estimates".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression

from levibot_pipelines.core.checks import check_labels, check_probabilities, check_same_length
from levibot_pipelines.core.metrics import log_loss as _log_loss

METHODS: tuple[str, ...] = ("identity", "platt", "isotonic")
# Clip before logit so p = 0 or 1 maps to a finite score (logit(1e-12) ~ -27.6).
LOGIT_EPS = 1e-12


@dataclass(frozen=True)
class Calibrator:
    """A fitted map ``p -> calibrated p``, shape (n,) -> (n,), values in [0, 1].

    - ``identity``: ``p`` unchanged.
    - ``platt``: ``sigmoid(a * logit(p) + b)``.
    - ``isotonic``: ``np.interp(p, x_thresholds, y_thresholds)``, constant beyond the ends.

    ``scores`` records the held-out log loss of each candidate when chosen by
    ``fit_calibrator(method="auto")`` (empty otherwise); ``n_fit`` is the number of bars fitted.
    """

    method: str = "identity"
    a: float = 1.0
    b: float = 0.0
    x_thresholds: tuple[float, ...] = ()
    y_thresholds: tuple[float, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    n_fit: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not (np.isfinite(self.a) and np.isfinite(self.b)):
            raise ValueError(f"platt parameters must be finite, got a={self.a}, b={self.b}")
        if len(self.x_thresholds) != len(self.y_thresholds):
            raise ValueError(
                f"threshold length mismatch: x {len(self.x_thresholds)}, y {len(self.y_thresholds)}"
            )
        if self.method == "isotonic":
            if not self.x_thresholds:
                raise ValueError("isotonic calibrator needs at least one threshold, got none")
            x = np.asarray(self.x_thresholds, dtype=np.float64)
            check_probabilities(x, "x_thresholds")
            check_probabilities(self.y_thresholds, "y_thresholds")
            if (np.diff(x) <= 0).any():
                raise ValueError(f"x_thresholds must be strictly increasing, got {x.tolist()}")

    def transform(self, p: object) -> np.ndarray:
        """Calibrated probabilities for ``p`` in [0, 1], shape (n,) -> (n,)."""
        p_arr = check_probabilities(p)
        if self.method == "platt":
            return expit(self.a * logit(np.clip(p_arr, LOGIT_EPS, 1.0 - LOGIT_EPS)) + self.b)
        if self.method == "isotonic":
            return np.interp(p_arr, self.x_thresholds, self.y_thresholds)
        return p_arr.copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation: strings, floats, ints and lists only."""
        return {
            "method": self.method,
            "a": float(self.a),
            "b": float(self.b),
            "x_thresholds": [float(v) for v in self.x_thresholds],
            "y_thresholds": [float(v) for v in self.y_thresholds],
            "scores": {k: float(v) for k, v in self.scores.items()},
            "n_fit": int(self.n_fit),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        unknown = set(d) - {
            "method",
            "a",
            "b",
            "x_thresholds",
            "y_thresholds",
            "scores",
            "n_fit",
        }
        if unknown:
            raise ValueError(f"unknown Calibrator keys: {sorted(unknown)}")
        return cls(
            method=str(d.get("method", "identity")),
            a=float(d.get("a", 1.0)),
            b=float(d.get("b", 0.0)),
            x_thresholds=tuple(float(v) for v in d.get("x_thresholds", ())),
            y_thresholds=tuple(float(v) for v in d.get("y_thresholds", ())),
            scores={str(k): float(v) for k, v in d.get("scores", {}).items()},
            n_fit=int(d.get("n_fit", 0)),
        )


def _fit_platt(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` minimizing the log loss of ``sigmoid(a * logit(p) + b)`` (L-BFGS-B)."""
    z = logit(np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS))

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        s = theta[0] * z + theta[1]
        # log(1 + e^s) - y*s is the per-bar log loss written stably in the score s.
        loss = np.mean(np.logaddexp(0.0, s) - y * s)
        r = expit(s) - y
        return float(loss), np.array([np.mean(r * z), np.mean(r)])

    res = minimize(loss_and_grad, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


def _fit_isotonic(p: np.ndarray, y: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # An end block of isotonic regression can be all 0s or all 1s; a probability of exactly 0
    # or 1 then costs an infinite log loss on the first counter-example out of sample. With n
    # calibration bars nothing below 1/(n+2) is supported (Laplace's rule), so clamp there.
    bound = 1.0 / (p.size + 2)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=bound, y_max=1.0 - bound, increasing=True)
    iso.fit(p, y)
    return tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_))


def _fit_method(method: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
    if method == "platt":
        a, b = _fit_platt(p, y)
        return Calibrator(method="platt", a=a, b=b, n_fit=p.size)
    if method == "isotonic":
        x_thr, y_thr = _fit_isotonic(p, y)
        return Calibrator(method="isotonic", x_thresholds=x_thr, y_thresholds=y_thr, n_fit=p.size)
    return Calibrator(method="identity", n_fit=p.size)


def _has_both_classes(y: np.ndarray) -> bool:
    return bool(0.0 < y.sum() < y.size)


def fit_calibrator(p: object, y: object, method: str = "auto") -> Calibrator:
    """Fit a calibrator on one calibration window, shape (n,) each, in bar (time) order.

    ``p`` are the model's uncalibrated ``P(up)`` and ``y`` the realized 0/1 directions.
    ``method`` is ``"identity"``, ``"platt"``, ``"isotonic"`` or ``"auto"`` (default).

    ``"auto"`` selects without peeking outside the window: split it in time into the first
    ``n // 2`` bars and the rest, fit each method on the first part, score log loss on the second,
    take the lowest (ties go to the simpler method, in the order identity, platt, isotonic), then
    refit the chosen method on the whole window. The held-out scores are kept in ``scores``.
    If the first part holds a single class, only identity can be scored and is chosen.

    Platt and isotonic need both classes in ``y``; ``"auto"`` needs ``n >= 4``.
    """
    if method not in (*METHODS, "auto"):
        raise ValueError(f"method must be one of {(*METHODS, 'auto')}, got {method!r}")
    p_arr, y_arr = check_probabilities(p), check_labels(y)
    check_same_length(p=p_arr, y=y_arr)
    if method in ("platt", "isotonic") and not _has_both_classes(y_arr):
        raise ValueError(f"{method} calibration needs both classes in y, got only {int(y_arr[0])}")
    if method != "auto":
        return _fit_method(method, p_arr, y_arr)
    if p_arr.size < 4:
        raise ValueError(f"auto calibration needs at least 4 bars, got {p_arr.size}")

    half = p_arr.size // 2
    p_fit, y_fit, p_val, y_val = p_arr[:half], y_arr[:half], p_arr[half:], y_arr[half:]
    candidates = METHODS if _has_both_classes(y_fit) else ("identity",)
    scores = {
        m: _log_loss(y_val, _fit_method(m, p_fit, y_fit).transform(p_val)) for m in candidates
    }
    best = min(candidates, key=lambda m: scores[m])  # min keeps the first, i.e. simplest, on ties
    return replace(_fit_method(best, p_arr, y_arr), scores=scores)
