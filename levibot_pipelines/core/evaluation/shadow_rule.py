"""The shadow rule, declared before any challenger is scored: when a challenger replaces the
champion, when it keeps waiting, and when it is retired.

A challenger is a newly trained version of one model kind (``lgbm`` or ``deep``) that passed the
offline rule (``core.evaluation.champion``) while a champion held the alias: it is published
beside the champion as the ``shadow`` (never traded) and scored live on the same matured bars.
For ``n`` bars ``i`` scored for both on the same bar and label (the champion version
``v_champion`` and the challenger ``v_challenger`` each published that bar first), with the label
``y_i`` (1 = up) and the two ``P(up)``:

- per-bar log loss ``l(p, y) = -(y ln q + (1 - y) ln(1 - q))``, ``q = clip(p, 1e-15, 1 - 1e-15)``
  (``core.metrics.log_loss``'s);
- paired difference ``d_i = l(p_champion_i, y_i) - l(p_challenger_i, y_i)`` (> 0: the challenger
  was better on bar ``i``), mean ``dbar``, sample standard deviation ``s`` (ddof 1);
- standard error ``se = s / sqrt(n) * sqrt(h)``: consecutive ``h``-bar labels share ``h - 1``
  bars, so ``n`` overlapping labels carry about ``n / h`` independent ones and the variance of
  the mean is inflated by ``h`` (as the live noise band, ``core.evaluation.live_scoring``);
- ``t = dbar / se`` (``0`` when ``dbar == 0``; ``+-inf`` when ``se == 0`` and ``dbar != 0``).

Verdict, with ``N = max(min_bars, 2)`` (``LEVIBOT_SHADOW_MIN_BARS``, default 500) and
``T = T_THRESHOLD`` (2.0):

- ``n < N``: ``wait`` (too few matured paired bars);
- ``dbar > 0`` and ``t >= T``: ``promote`` (the challenger takes the champion alias);
- ``t <= -T``: ``retire`` (significantly worse: the challenger alias is removed);
- otherwise ``wait``.

The rule is evaluated again after every scoring run on all the paired bars so far (no
correction for the repeated looks: the minimum bars and ``T`` are the guard).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import (
    check_array,
    check_int,
    check_labels,
    check_probabilities,
    check_same_length,
)

T_THRESHOLD = 2.0
EPS = 1e-15  # the clip of core.metrics.log_loss
ACTIONS = ("promote", "retire", "wait")
KINDS = ("lgbm", "deep")


@dataclass(frozen=True)
class ShadowVerdict:
    """The rule's verdict on one challenger: ``action`` (one of ``ACTIONS``), the ``n`` paired
    bars, the mean paired log-loss difference ``mean_diff`` (nats, champion minus challenger;
    NaN when ``n == 0``), its ``se`` (inflated by ``sqrt(h)``; NaN when ``n < 2``), ``t`` (NaN
    when ``n < 2``) and the ``reason`` in words."""

    action: str
    n: int
    mean_diff: float
    se: float
    t: float
    reason: str


def bar_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-bar log loss (nats) of ``P(up)`` ``p`` for labels ``y`` (0/1), ``p`` clipped to
    ``[1e-15, 1 - 1e-15]``; shape of ``y``."""
    q = np.clip(p, EPS, 1.0 - EPS)
    return -(y * np.log(q) + (1.0 - y) * np.log1p(-q))


def paired_t(diff: np.ndarray, horizon: int) -> tuple[float, float, float]:
    """``(mean, se, t)`` of the paired differences ``diff`` (module docstring: ``se`` is
    ``s / sqrt(n) * sqrt(horizon)``); NaN ``se`` and ``t`` when fewer than 2 bars."""
    d = check_array(diff, "diff", allow_empty=True)
    h = check_int("horizon", horizon, 1)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    se = float(d.std(ddof=1)) / math.sqrt(d.size) * math.sqrt(h)
    if se == 0.0:
        return mean, 0.0, 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean, se, mean / se


def shadow_verdict(
    y: object,
    p_champion: object,
    p_challenger: object,
    *,
    horizon: int,
    min_bars: int,
    t_threshold: float = T_THRESHOLD,
) -> ShadowVerdict:
    """The verdict (module docstring) on paired bars: labels ``y`` (0/1) and each model's
    ``P(up)`` on the same bars (1-D, equal lengths, in [0, 1]); ``horizon``: the label horizon
    ``h`` in bars; ``min_bars``: the matured paired bars required before any verdict but wait."""
    yy, pc, ph = (
        check_array(a, name, allow_empty=True)
        for a, name in ((y, "y"), (p_champion, "p_champion"), (p_challenger, "p_challenger"))
    )
    check_same_length(y=yy, p_champion=pc, p_challenger=ph)
    if yy.size:
        check_labels(yy)
        check_probabilities(pc, "p_champion")
        check_probabilities(ph, "p_challenger")
    need = max(check_int("min_bars", min_bars, 1), 2)
    if not t_threshold > 0:
        raise ValueError(f"t_threshold must be > 0, got {t_threshold}")
    mean, se, t = paired_t(bar_log_loss(yy, pc) - bar_log_loss(yy, ph), horizon)
    n = int(yy.size)
    stats = f"{n} paired bars, mean log-loss gain {mean:+.6g} nats, t = {t:.3g}"
    if n < need:
        return ShadowVerdict("wait", n, mean, se, t, f"waiting: {n} of {need} paired bars")
    if mean > 0 and t >= t_threshold:
        return ShadowVerdict(
            "promote", n, mean, se, t, f"promoted: beats the champion ({stats} >= {t_threshold:g})"
        )
    if t <= -t_threshold:
        return ShadowVerdict(
            "retire",
            n,
            mean,
            se,
            t,
            f"retired: worse than the champion ({stats} <= -{t_threshold:g})",
        )
    return ShadowVerdict("wait", n, mean, se, t, f"waiting: no significant difference ({stats})")


def paired_bars(
    champion: pl.DataFrame,
    challenger: pl.DataFrame,
    *,
    kind: str,
    champion_version: str,
    challenger_version: str,
) -> pl.DataFrame:
    """The bars both scored: ``champion`` and ``challenger`` are one symbol's scored rows of one
    horizon (``bar_time``, ``y_up``, ``{kind}_p_up`` and ``{kind}_version``: the version that
    published the bar first), the champion's from the published history, the challenger's from
    the shadow history. Returns ``bar_time``, ``y_up``, ``p_champion``, ``p_challenger`` of the
    bars where ``{kind}_version`` is ``champion_version`` and ``challenger_version`` respectively
    (inner join on ``bar_time``), oldest first."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    p, v = f"{kind}_p_up", f"{kind}_version"
    left = champion.filter(pl.col(v) == str(champion_version)).select(
        "bar_time", pl.col("y_up").cast(pl.Float64), pl.col(p).alias("p_champion")
    )
    right = challenger.filter(pl.col(v) == str(challenger_version)).select(
        "bar_time", pl.col(p).alias("p_challenger")
    )
    return left.join(right, on="bar_time", how="inner").sort("bar_time")
