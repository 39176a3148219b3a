"""The policy's building blocks, scalar or vectorized: position size from confidence,
volatility and uncertainty; the market regime; the entry threshold that adapts to both; stop
and take-profit distances and levels. ``core.trading.policy`` assembles them into ``Signals``.

Time alignment: a value at bar ``t`` uses inputs at rows ``<= t`` only (trailing windows are
causal and cut at ``t``).

``volatility`` (every public helper) is ABSOLUTE, as in the seed: a per-bar return std such as
``vol_20`` (0.02 = 2%). The rules read it RELATIVE to ``reference_volatility``, the typical level
(keyword, default ``REFERENCE_VOLATILITY`` = 0.02, the seed's): ``relative = volatility /
reference_volatility``, so 1.0 is a typical bar and 2.0 twice as volatile as usual. The seed's
calls give the seed's results, e.g. ``size_from_confidence(0.8, 0.02, 1.2, 1.0) == 0.96`` and
``adaptive_stop_loss(50000, 0.03, 0.02) == 48500`` (a 3% stop at the typical volatility).
``core.trading.policy`` measures the typical level per bar instead (``relative_volatility``: the
trailing mean of ``vol_20``) and passes that ratio with ``reference_volatility=1.0``.

Regime codes (``REGIME_NAMES``): +1 trend, 0 neutral, -1 mean-reverting. Over a window of ``n``
one-bar log returns ``r`` two statistics are each about N(0, 1) for a driftless random walk, so
their thresholds do not depend on ``n``:

    drift_z    = sum(r) / sqrt(sum(r^2))                  (t-statistic of the mean return)
    autocorr_z = sqrt(n) * sum_i r_i r_(i-1) / sum(r^2)   (lag-1 autocorrelation * sqrt(n))

trend if ``|drift_z| >= z`` or ``autocorr_z >= z``; else meanrev if ``autocorr_z <= -z``; else
neutral (``z`` = ``REGIME_Z`` = 2.5). ``autocorr_z / sqrt(n)`` is about ``VR(2) - 1``, the
two-bar variance ratio minus one. A window with ``sum(r^2) == 0`` is neutral. A volatility shock
(relative volatility >= ``SHOCK_VOLATILITY`` = 3) is neutral too: the window then describes the
market before the shock.
"""

from __future__ import annotations

import math

import numpy as np

from levibot_pipelines.core.checks import check_int, check_range

REGIME_NAMES: dict[int, str] = {1: "trend", 0: "neutral", -1: "meanrev"}
REGIME_CODES: dict[str, int] = {v: k for k, v in REGIME_NAMES.items()}
REGIME_Z = 2.5
REFERENCE_VOLATILITY = 0.02  # the seed's typical absolute per-bar volatility (relative 1.0)
SHOCK_VOLATILITY = 3.0  # relative volatility of a shock
MIN_VOLATILITY = 0.5  # floor of relative volatility in sizing: calm bars at most double a size
UNCERTAINTY_SCALE = 0.05  # std of the MC p at which the size halves
REGIME_SHIFT = 0.02  # entry threshold change in a trend (-) or a mean-reverting market (+)
VOL_SENSITIVITY = 0.01  # threshold increase per unit of relative volatility above 1 ...
MAX_VOL_EXCESS = 3.0  # ... counted up to relative volatility 4, so at most +0.03
THRESHOLD_BOUNDS = (0.501, 0.99)
STOP_VOL_BOUNDS = (0.5, 2.0)


def _out(a: np.ndarray) -> float | np.ndarray:
    return float(a) if a.ndim == 0 else a


def _relative(volatility: object, reference_volatility: object) -> np.ndarray:
    """``volatility / reference_volatility`` (both finite and > 0; they broadcast)."""
    vol = check_range(volatility, "volatility", 0.0, math.inf, open_lo=True)
    ref = check_range(reference_volatility, "reference_volatility", 0.0, math.inf, open_lo=True)
    return vol / ref


def relative_volatility(volatility: object, lookback: int) -> np.ndarray:
    """``vol_t / mean(vol[t - lookback + 1 .. t])``, shape (n,): the bar's absolute volatility
    (e.g. ``vol_20``, finite and > 0) over its trailing mean including bar ``t``; an expanding
    mean over the first ``lookback - 1`` bars, so bar 0 is 1.0. Causal by construction."""
    check_int("lookback", lookback, 1)
    v = check_range(volatility, "volatility", 0.0, math.inf, open_lo=True)
    if v.ndim != 1:
        raise ValueError(f"volatility must be 1-D, got shape {v.shape}")
    csum = np.r_[0.0, np.cumsum(v)]
    t = np.arange(v.size)
    start = np.maximum(t - lookback + 1, 0)
    return v * (t + 1 - start) / (csum[t + 1] - csum[start])


def size_from_confidence(
    confidence: object,
    volatility: object,
    regime_multiplier: float = 1.0,
    base_size: float = 1.0,
    max_size: float | None = None,
    *,
    uncertainty: object | None = None,
    min_confidence: float = 0.0,
    uncertainty_scale: float = UNCERTAINTY_SCALE,
    min_volatility: float = MIN_VOLATILITY,
    reference_volatility: object = REFERENCE_VOLATILITY,
) -> float | np.ndarray:
    """Position size as a fraction of equity (a float for scalar inputs, else an array):

        rel  = volatility / reference_volatility
        size = base_size * confidence * regime_multiplier / max(rel, min_volatility)
               / (1 + uncertainty / uncertainty_scale)

    capped at ``max_size`` (None: no cap) and exactly 0 where ``confidence < min_confidence``.
    ``confidence`` in [0, 1]; ``volatility`` ABSOLUTE (> 0) over ``reference_volatility`` (> 0,
    default 0.02), the relative volatility floored at ``min_volatility`` (default 0.5) so calm
    bars at most double a size; ``uncertainty`` >= 0 the std of the MC-dropout ``p`` (None: 0),
    which halves the size at ``uncertainty_scale`` (0.05). The seed's example:
    ``size_from_confidence(0.8, 0.02, 1.2, 1.0)`` = 0.8 * 1.2 / 1 = 0.96. Inputs broadcast.
    Non-decreasing in confidence, non-increasing in volatility and uncertainty.
    """
    conf = check_range(confidence, "confidence", 0.0, 1.0)
    vol = _relative(volatility, reference_volatility)
    unc = check_range(0.0 if uncertainty is None else uncertainty, "uncertainty", 0.0, math.inf)
    for name, v in (("regime_multiplier", regime_multiplier), ("base_size", base_size)):
        check_range(v, name, 0.0, math.inf)
    if max_size is not None:
        check_range(max_size, "max_size", 0.0, math.inf)
    check_range(min_confidence, "min_confidence", 0.0, 1.0)
    check_range(uncertainty_scale, "uncertainty_scale", 0.0, math.inf, open_lo=True)
    check_range(min_volatility, "min_volatility", 0.0, math.inf, open_lo=True)
    size = base_size * conf * regime_multiplier / np.maximum(vol, min_volatility)
    size = size / (1.0 + unc / uncertainty_scale)
    if max_size is not None:
        size = np.minimum(size, max_size)
    return _out(np.where(conf < min_confidence, 0.0, size))


def _regime_codes(s1, s2, s3, n: int, z: float) -> np.ndarray:
    """Codes from window sums ``s1 = sum r``, ``s2 = sum r^2``, ``s3 = sum r_i r_(i-1)``; the
    z-statistics are compared multiplied through by ``sqrt(s2)`` or ``s2`` (no division)."""
    live = s2 > 0.0
    auto = math.sqrt(n) * s3
    trend = live & ((s1 * s1 >= (z * z) * s2) | (auto >= z * s2))
    meanrev = live & ~trend & (auto <= -z * s2)
    return trend.astype(np.int8) - meanrev.astype(np.int8)


def classify_regime(
    recent_returns: object,
    volatility: float | None = None,
    *,
    z: float = REGIME_Z,
    reference_volatility: float = REFERENCE_VOLATILITY,
) -> str:
    """Regime of one bar from its trailing one-bar log returns (1-D, finite, >= 2 values, the
    newest last) and optionally its ABSOLUTE volatility (> 0): ``"trend"``, ``"neutral"`` or
    ``"meanrev"`` as defined in the module docstring (threshold ``z``, default 2.5; a
    volatility >= 3 x ``reference_volatility`` (default 0.02) is a shock: neutral).
    ``classify_regimes`` computes the same over a series."""
    r = check_range(recent_returns, "recent_returns", -math.inf, math.inf)
    if r.ndim != 1 or r.size < 2:
        raise ValueError(f"recent_returns must be 1-D with >= 2 values, got shape {r.shape}")
    if volatility is not None:
        if _relative(volatility, reference_volatility) >= SHOCK_VOLATILITY:
            return "neutral"
    code = _regime_codes(r.sum(), (r * r).sum(), (r[1:] * r[:-1]).sum(), r.size, z)
    return REGIME_NAMES[int(code)]


def classify_regimes(
    ret_1: object,
    lookback: int = 96,
    volatility: object | None = None,
    *,
    z: float = REGIME_Z,
    reference_volatility: object = REFERENCE_VOLATILITY,
) -> np.ndarray:
    """``classify_regime`` at every bar, int8 codes of shape (n,): bar ``t`` uses the window
    ``ret_1[t - lookback + 1 .. t]`` (one-bar log returns, finite) and ``volatility[t]``
    (ABSOLUTE, optional, over ``reference_volatility``: a scalar or shape (n,), default 0.02);
    the first ``lookback - 1`` bars are neutral (0). Window sums come from cumulative sums, so
    a bar's code depends on rows ``<= t`` only."""
    check_int("lookback", lookback, 2)
    r = check_range(ret_1, "ret_1", -math.inf, math.inf)
    if r.ndim != 1:
        raise ValueError(f"ret_1 must be 1-D, got shape {r.shape}")
    codes = np.zeros(r.size, dtype=np.int8)
    if r.size >= lookback:
        c1, c2 = np.r_[0.0, np.cumsum(r)], np.r_[0.0, np.cumsum(r * r)]
        c3 = np.r_[0.0, 0.0, np.cumsum(r[1:] * r[:-1])]  # c3[k] = sum of r_i r_(i-1), i < k
        m = r.size - lookback + 1  # windows [t - lookback + 1, t] for t >= lookback - 1
        s2 = np.maximum(c2[lookback:] - c2[:m], 0.0)  # rounding must not make it < 0
        s3 = c3[lookback:] - c3[1 : m + 1]
        codes[lookback - 1 :] = _regime_codes(c1[lookback:] - c1[:m], s2, s3, lookback, z)
    if volatility is not None:
        vol = check_range(volatility, "volatility", 0.0, math.inf, open_lo=True)
        if vol.shape != r.shape:
            raise ValueError(f"volatility has shape {vol.shape}, expected {r.shape} like ret_1")
        codes[_relative(vol, reference_volatility) >= SHOCK_VOLATILITY] = 0
    return codes


def adaptive_entry_threshold(
    base_threshold: float,
    regime: str | int | object,
    volatility: object,
    *,
    regime_shift: float = REGIME_SHIFT,
    vol_sensitivity: float = VOL_SENSITIVITY,
    reference_volatility: object = REFERENCE_VOLATILITY,
) -> float | np.ndarray:
    """Entry threshold on ``P(up)`` (a long needs ``p >= threshold``), with ``rel = volatility /
    reference_volatility`` (ABSOLUTE volatility > 0 over its typical level, default 0.02):

        threshold = clip(base - regime_shift * code
                         + vol_sensitivity * clip(rel - 1, 0, 3), 0.501, 0.99)

    ``code`` +1 trend / 0 neutral / -1 meanrev (``regime`` a name, a code or an array of codes):
    a trend lowers the threshold, a mean-reverting market raises it. Volatility above its
    typical level raises it, by at most 0.03 (defaults 0.02 and 0.01): base 0.55 at volatility
    0.02 (rel 1) gives 0.53 / 0.55 / 0.57 (the seed's), at 0.04 (rel 2) 0.54 / 0.56 / 0.58.
    ``base_threshold`` in (0.5, 0.99]; the result always lies in [0.501, 0.99].
    """
    check_range(base_threshold, "base_threshold", 0.5, THRESHOLD_BOUNDS[1], open_lo=True)
    if isinstance(regime, str):
        if regime not in REGIME_CODES:
            raise ValueError(f"regime must be one of {sorted(REGIME_CODES)}, got {regime!r}")
        regime = REGIME_CODES[regime]
    code = np.asarray(regime)
    if not np.isin(code, (-1, 0, 1)).all():
        raise ValueError(f"regime codes must be in {{-1, 0, 1}}, got {np.unique(code)}")
    vol = _relative(volatility, reference_volatility)
    for name, v in (("regime_shift", regime_shift), ("vol_sensitivity", vol_sensitivity)):
        check_range(v, name, 0.0, 0.5)
    excess = np.clip(vol - 1.0, 0.0, MAX_VOL_EXCESS)
    thr = base_threshold - regime_shift * code + vol_sensitivity * excess
    return _out(np.clip(thr, *THRESHOLD_BOUNDS))


def stop_distance_pct(
    base_pct: float,
    volatility: object,
    vol_bounds: tuple[float, float] = STOP_VOL_BOUNDS,
    *,
    reference_volatility: object = REFERENCE_VOLATILITY,
) -> float | np.ndarray:
    """Distance of a stop or take-profit from the entry as a fraction of its price:
    ``base_pct * clip(volatility / reference_volatility, lo, hi)`` with ABSOLUTE ``volatility``
    (> 0) over its typical level (default 0.02) and ``vol_bounds = (lo, hi)`` (default
    (0.5, 2)): wider in volatile markets, tighter in calm; ``base_pct`` at the typical level."""
    lo, hi = vol_bounds
    if not (0.0 < lo <= hi < math.inf):
        raise ValueError(f"vol_bounds must satisfy 0 < lo <= hi < inf, got {vol_bounds}")
    check_range(base_pct, "base_pct", 0.0, math.inf, open_lo=True)
    vol = _relative(volatility, reference_volatility)
    return _out(base_pct * np.clip(vol, lo, hi))


def _level(
    entry_price: float, pct: float, vol: float, ref: float, side: str | int, name: str, sign: int
) -> float:
    sides = {"long": 1, "short": -1, 1: 1, -1: -1}
    if isinstance(side, bool) or side not in sides:
        raise ValueError(f"side must be 'long' or 'short' (or +1/-1), got {side!r}")
    check_range(entry_price, "entry_price", 0.0, math.inf, open_lo=True)
    d = stop_distance_pct(pct, vol, reference_volatility=ref)
    if d >= 1.0:
        raise ValueError(f"{name} distance {d} must be < 1 so the level stays above 0")
    return float(entry_price * (1.0 + sign * sides[side] * d))


def adaptive_stop_loss(
    entry_price: float,
    base_stop_pct: float,
    volatility: float,
    side: str | int = "long",
    *,
    reference_volatility: float = REFERENCE_VOLATILITY,
) -> float:
    """Stop price: ``entry * (1 - d)`` for a long, ``entry * (1 + d)`` for a short, with
    ``d = stop_distance_pct(base_stop_pct, volatility, reference_volatility=...)`` (ABSOLUTE
    volatility; default typical level 0.02). The seed's ``adaptive_stop_loss(50000, 0.03,
    0.02)``: d = 0.03 * clip(0.02 / 0.02, 0.5, 2) = 0.03, so 50000 * 0.97 = 48500."""
    return _level(entry_price, base_stop_pct, volatility, reference_volatility, side, "stop", -1)


def adaptive_take_profit(
    entry_price: float,
    base_tp_pct: float,
    volatility: float,
    side: str | int = "long",
    *,
    reference_volatility: float = REFERENCE_VOLATILITY,
) -> float:
    """Take-profit price: ``entry * (1 + d)`` for a long, ``entry * (1 - d)`` for a short, with
    ``d = stop_distance_pct(base_tp_pct, volatility, reference_volatility=...)`` (ABSOLUTE
    volatility; default typical level 0.02), e.g. ``(50000, 0.06, 0.02)`` -> 53000."""
    ref = reference_volatility
    return _level(entry_price, base_tp_pct, volatility, ref, side, "take_profit", 1)
