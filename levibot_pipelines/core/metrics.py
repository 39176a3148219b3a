"""Evaluation metrics for binary direction forecasts.

Conventions: ``y`` holds the realized direction of bar ``t`` (1 = close(t+h) > close(t), else 0)
and ``p`` the forecast ``P(up)`` made at the close of ``t``; both are 1-D arrays of equal length
``n`` in bar order. Every function validates its input and raises ``ValueError`` naming the bad
value; every scalar is returned as a plain Python ``float`` so results are JSON-serializable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm, rankdata

from levibot_pipelines.core.checks import (
    check_array,
    check_labels,
    check_probabilities,
    check_same_length,
)

DEFAULT_COVERAGES: tuple[float, ...] = (0.1, 0.2, 0.5)


def _labels_and_probs(y: object, p: object) -> tuple[np.ndarray, np.ndarray]:
    y_arr, p_arr = check_labels(y), check_probabilities(p)
    check_same_length(y=y_arr, p=p_arr)
    return y_arr, p_arr


def _confidence(p: np.ndarray, confidence: object | None) -> np.ndarray:
    if confidence is None:
        return np.abs(2.0 * p - 1.0)
    conf = check_array(confidence, "confidence")
    check_same_length(p=p, confidence=conf)
    return conf


def auc(y: object, p: object) -> float:
    """Area under the ROC curve, shape (n,) inputs, ties counted as one half.

    Computed as the Mann-Whitney U statistic on average ranks, which equals
    ``sklearn.metrics.roc_auc_score``. Raises ``ValueError`` when ``y`` holds only one class,
    where AUC is undefined.
    """
    y_arr, p_arr = _labels_and_probs(y, p)
    n_pos = float(y_arr.sum())
    n_neg = float(y_arr.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        only = 1 if n_pos else 0
        raise ValueError(f"auc is undefined when y contains only one class (all {only})")
    ranks = rankdata(p_arr, method="average")
    u = ranks[y_arr == 1.0].sum() - n_pos * (n_pos + 1.0) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(y: object, p: object, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy in nats, ``p`` clipped to ``[eps, 1 - eps]`` (default 1e-15)."""
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    y_arr, p_arr = _labels_and_probs(y, p)
    q = np.clip(p_arr, eps, 1.0 - eps)
    return float(-np.mean(y_arr * np.log(q) + (1.0 - y_arr) * np.log1p(-q)))


def brier(y: object, p: object) -> float:
    """Brier score, the mean squared error ``mean((p - y)^2)`` (Brier 1950); 0 is perfect."""
    y_arr, p_arr = _labels_and_probs(y, p)
    return float(np.mean((p_arr - y_arr) ** 2))


def brier_skill_score(y: object, p: object, base_rate: float) -> float:
    """Brier skill score ``1 - brier(y, p) / brier(y, base_rate)``.

    ``base_rate`` is the fraction of up bars in the TRAINING window (a constant forecast known at
    prediction time), not the rate of the evaluated ``y``. Positive means better than that
    climatology forecast. Raises ``ValueError`` when the reference Brier score is 0.
    """
    rate = check_probabilities([base_rate], "base_rate")
    y_arr, p_arr = _labels_and_probs(y, p)
    ref = float(np.mean((rate[0] - y_arr) ** 2))
    if ref == 0.0:
        raise ValueError(f"brier_skill_score undefined: base_rate {base_rate} forecasts y exactly")
    return float(1.0 - brier(y_arr, p_arr) / ref)


def reliability_bins(
    y: object, p: object, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per-bin calibration statistics and the expected calibration error of ``p = P(y = 1)``.

    ``y`` (0/1 labels) and ``p`` (probabilities) have shape (n,). Bins are ``n_bins`` uniform
    ``[lo, hi)`` intervals on [0, 1] (default 15) and ``p == 1`` falls into a bin of its own:
    the bin of ``p`` is ``searchsorted(edges, p, side="right") - 1``, as in
    ``torch.bucketize(..., right=True) - 1``. Returns ``(mean_p, frac_pos, count, ece)``: the
    first three have shape (n_bins + 1,), ``mean_p``/``frac_pos`` are NaN in empty bins, and
    ``ece = sum_b (n_b / n) |frac_pos_b - mean_p_b|`` (L1, Naeini et al. 2015, "Obtaining Well
    Calibrated Probabilities Using Bayesian Binning"), computed like torchmetrics
    ``binary_calibration_error(p, y, n_bins, norm="l1")``. Edges come from ``np.linspace`` in
    float64; ``torch.linspace`` can differ by one ulp, so only a ``p`` within one ulp of an
    interior edge may be binned differently.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    y_arr, p_arr = _labels_and_probs(y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges, p_arr, side="right") - 1
    count = np.bincount(idx, minlength=n_bins + 1).astype(np.float64)
    sum_p = np.bincount(idx, weights=p_arr, minlength=n_bins + 1)
    sum_y = np.bincount(idx, weights=y_arr, minlength=n_bins + 1)
    filled = count > 0
    mean_p = np.full(n_bins + 1, np.nan)
    frac_pos = np.full(n_bins + 1, np.nan)
    mean_p[filled] = sum_p[filled] / count[filled]
    frac_pos[filled] = sum_y[filled] / count[filled]
    gap = np.abs(frac_pos[filled] - mean_p[filled])
    return mean_p, frac_pos, count, float(np.sum(gap * count[filled] / p_arr.size))


def ece(y: object, p: object, n_bins: int = 15) -> float:
    """Expected calibration error, L1 norm, ``n_bins`` uniform bins on [0, 1] (default 15):
    ``sum_b (n_b / n) |mean(y in b) - mean(p in b)|``, binned as in ``reliability_bins``."""
    return reliability_bins(y, p, n_bins)[3]


def ece_quantile(y: object, p: object, n_bins: int = 15) -> float:
    """Expected calibration error, L1 norm, on ``n_bins`` equal-count bins (default 15).

    Where ``p`` is concentrated (on 15m candles 98% of it lies in [0.43, 0.59]) nearly all
    uniform bins of ``ece`` are empty; these bins follow the data instead. Edges are the
    quantiles of ``p`` at ``k / n_bins``, ``k = 1..n_bins-1`` (``np.quantile``, linear); the bin
    of ``p`` is ``searchsorted(edges, p, side="right")``, so tied ``p`` always share a bin (a bin
    then holds more than ``n / n_bins`` bars and another fewer) and empty bins are skipped: a
    constant ``p`` gives one bin and ``|mean(y) - p|``. ``y``/``p`` shape (n,).
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    y_arr, p_arr = _labels_and_probs(y, p)
    edges = np.quantile(p_arr, np.arange(1, n_bins) / n_bins)
    idx = np.searchsorted(edges, p_arr, side="right")
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    filled = count > 0
    mean_p = np.bincount(idx, weights=p_arr, minlength=n_bins)[filled] / count[filled]
    frac_pos = np.bincount(idx, weights=y_arr, minlength=n_bins)[filled] / count[filled]
    return float(np.sum(np.abs(frac_pos - mean_p) * count[filled]) / p_arr.size)


def risk_coverage(
    y: object, p: object, confidence: object | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Risk-coverage curve of selective prediction (Geifman & El-Yaniv 2017).

    Bars are sorted by ``confidence`` descending (default ``|2p - 1|``; ties keep bar order) and
    the prediction is ``p >= 0.5``. Returns ``(coverage, risk)``, each shape (n,): for
    ``k = 1..n``, ``coverage[k-1] = k / n`` and ``risk[k-1]`` is the error rate of the ``k`` most
    confident bars.
    """
    y_arr, p_arr = _labels_and_probs(y, p)
    conf = _confidence(p_arr, confidence)
    order = np.argsort(-conf, kind="stable")
    errors = ((p_arr[order] >= 0.5).astype(np.float64) != y_arr[order]).astype(np.float64)
    k = np.arange(1, y_arr.size + 1, dtype=np.float64)
    return k / y_arr.size, np.cumsum(errors) / k


def accuracy_at_coverage(
    y: object,
    p: object,
    coverages: Sequence[float] = DEFAULT_COVERAGES,
    confidence: object | None = None,
) -> dict[str, float]:
    """Accuracy of the ``ceil(c * n)`` most confident bars, for each coverage ``c`` in (0, 1].

    Keys are ``str(c)`` (``"0.1"``, ``"0.2"``, ``"0.5"`` by default). ``c * n`` is rounded to 9
    decimals before ``ceil`` so float noise (``0.1 * 30 = 3.0000000000000004``) does not add a
    bar. Confidence and ties as in ``risk_coverage``.
    """
    _, risk = risk_coverage(y, p, confidence)
    n = risk.size
    out: dict[str, float] = {}
    for c in coverages:
        if not 0.0 < c <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {c}")
        k = max(1, math.ceil(round(c * n, 9)))
        out[str(c)] = float(1.0 - risk[k - 1])
    return out


def picp(y_true: object, mu: object, sigma: object, level: float) -> float:
    """Prediction interval coverage probability of central Gaussian intervals.

    Fraction of ``y_true`` (e.g. log returns) with ``|y_true - mu| <= z * sigma``, where
    ``z = Phi^-1((1 + level) / 2)``; all inputs shape (n,) in the same units, ``sigma > 0``.
    A well-calibrated ``sigma`` gives ``picp ~= level`` (e.g. 0.5 or 0.9).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    y_arr = check_array(y_true, "y_true")
    mu_arr = check_array(mu, "mu")
    sigma_arr = check_array(sigma, "sigma")
    check_same_length(y_true=y_arr, mu=mu_arr, sigma=sigma_arr)
    if (sigma_arr <= 0.0).any():
        raise ValueError(f"sigma must be positive, got min {sigma_arr.min()}")
    z = float(norm.ppf((1.0 + level) / 2.0))
    return float(np.mean(np.abs(y_arr - mu_arr) <= z * sigma_arr))


def summarize(
    y: object,
    p: object,
    base_rate: float,
    confidence: object | None = None,
) -> dict[str, float | dict[str, float]]:
    """All headline metrics of one forecast in one JSON-safe dict.

    Keys: ``auc``, ``log_loss``, ``brier``, ``bss`` (vs the training ``base_rate``), ``ece``
    (15 bins) and ``acc_at_coverage`` (dict keyed ``"0.1"``, ``"0.2"``, ``"0.5"``).
    """
    return {
        "auc": auc(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "bss": brier_skill_score(y, p, base_rate),
        "ece": ece(y, p),
        "acc_at_coverage": accuracy_at_coverage(y, p, confidence=confidence),
    }
