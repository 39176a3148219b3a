"""The one-line rules as calibrated probabilities: ``last_return`` (momentum: up when the last
bar rose) and ``reversal`` (the opposite). Each becomes ``0.5 +/- s/2`` with the strength
``s = |2 acc - 1|``, ``acc`` being the momentum rule's accuracy on the training bars, so it is
scored as an honestly calibrated rule. The walk-forward scores them as baselines; the decision
engine takes ``reversal`` as a candidate model like the fitted ones."""

from __future__ import annotations

import numpy as np


def rule_strength(ret_1: np.ndarray, y_up: np.ndarray) -> float:
    """``s = |2 acc - 1|`` in [0, 1], ``acc`` the share of training bars (n,) where the last
    one-bar log return's sign (``ret_1 > 0``) matched the label (``y_up > 0.5``)."""
    r, y = np.asarray(ret_1, dtype=np.float64), np.asarray(y_up, dtype=np.float64)
    if r.shape != y.shape or r.size == 0:
        raise ValueError(
            f"ret_1 and y_up must be non-empty and of one shape, got {r.shape}, {y.shape}"
        )
    return abs(2.0 * float(np.mean((r > 0) == (y > 0.5))) - 1.0)


def rule_probability(ret_1: np.ndarray, strength: float, sign: float) -> np.ndarray:
    """``P(up)`` of a rule, shape of ``ret_1``: ``0.5 + sign * s/2`` after a rise (``ret_1 >
    0``), ``0.5 - sign * s/2`` otherwise; ``sign`` +1 momentum, -1 reversal."""
    return 0.5 + sign * 0.5 * strength * np.where(np.asarray(ret_1) > 0, 1.0, -1.0)


def reversal_probability(ret_1: np.ndarray, strength: float) -> np.ndarray:
    """The reversal rule's ``P(up)`` (``rule_probability`` with ``sign = -1``)."""
    return rule_probability(ret_1, strength, -1.0)
