"""Turn calibrated per-bar forecasts into trading instructions (``Signals`` for
``core.trading.backtest``).

A 15m model's edge is small next to a round trip's ~20 bps of fees plus slippage, so the policy
trades rarely: only when ``P(up)`` clears an entry threshold that adapts to the regime and the
volatility, only when the model is not too uncertain, with a size that grows with confidence and
shrinks with volatility and uncertainty. The scalar and vectorized pieces (sizes, regimes,
thresholds, stops, relative volatility) live in ``core.trading.adaptive``. Those take an
absolute ``volatility`` over a fixed typical level (the seed's 0.02); the policy measures the
typical level per bar instead (the trailing mean of ``vol_20``, ``relative_volatility``) and
hands them that ratio with ``reference_volatility=1.0`` (``REL``).

Time alignment: every output at bar ``t`` is decided at the close of ``t`` from inputs at rows
``<= t`` (the backtest fills it at ``open(t+1)``). Trailing windows are causal and cut at ``t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from levibot_pipelines.core.checks import check_int, check_range
from levibot_pipelines.core.trading.adaptive import (
    STOP_VOL_BOUNDS,
    THRESHOLD_BOUNDS,
    UNCERTAINTY_SCALE,
    adaptive_entry_threshold,
    classify_regimes,
    relative_volatility,
    size_from_confidence,
    stop_distance_pct,
)
from levibot_pipelines.core.trading.backtest import Signals

REL = 1.0  # ``reference_volatility`` for volatility that is already relative (1.0 typical)


@dataclass(frozen=True)
class PolicyConfig:
    """Settings of ``policy_signals``. A long enters when ``p >= threshold_t`` (the adaptive
    threshold from ``base_threshold``) and exits when ``p < exit_threshold``; a short (only
    with ``allow_short``) enters when ``p <= 1 - threshold_t`` and exits when
    ``p > 1 - exit_threshold``. ``max_uncertainty``: no entry where the std of the MC ``p``
    exceeds it (None: no cap). Sizes from ``size_from_confidence`` with ``base_size``,
    ``max_size``, ``min_confidence`` and ``uncertainty_scale``; stop and take-profit
    distances from ``stop_distance_pct``. Lookbacks are in bars (96 = 1 day, 2880 = 30 days).

    ``base_threshold``, ``allow_short`` and ``max_uncertainty`` have no default and are
    keyword-only: the pipeline passes the configured ``LEVIBOT_ENTRY_THRESHOLD``,
    ``LEVIBOT_ALLOW_SHORT`` and ``LEVIBOT_MAX_UNCERTAINTY``."""

    base_threshold: float = field(kw_only=True)
    exit_threshold: float = 0.50
    allow_short: bool = field(kw_only=True)
    base_size: float = 1.0
    max_size: float = 1.0
    max_uncertainty: float | None = field(kw_only=True)
    min_confidence: float = 0.0
    uncertainty_scale: float = UNCERTAINTY_SCALE
    base_stop_pct: float = 0.01
    base_take_profit_pct: float = 0.02
    regime_lookback: int = 96
    vol_lookback: int = 2880

    def __post_init__(self) -> None:
        check_range(self.base_threshold, "base_threshold", 0.5, THRESHOLD_BOUNDS[1], open_lo=True)
        check_range(
            self.exit_threshold, "exit_threshold (<= base_threshold)", 0.0, self.base_threshold
        )
        check_range(self.base_size, "base_size", 0.0, math.inf)
        check_range(self.max_size, "max_size", 0.0, math.inf)
        if self.max_uncertainty is not None:
            check_range(self.max_uncertainty, "max_uncertainty", 0.0, math.inf)
        check_range(self.min_confidence, "min_confidence", 0.0, 1.0)
        check_range(self.uncertainty_scale, "uncertainty_scale", 0.0, math.inf, open_lo=True)
        hi = 1.0 / STOP_VOL_BOUNDS[1]  # the widest distance must stay < 100%
        check_range(self.base_stop_pct, "base_stop_pct", 0.0, hi - 1e-12, open_lo=True)
        check_range(
            self.base_take_profit_pct, "base_take_profit_pct", 0.0, hi - 1e-12, open_lo=True
        )
        check_int("regime_lookback", self.regime_lookback, 2)
        check_int("vol_lookback", self.vol_lookback, 1)


@dataclass(frozen=True)
class PolicyOutput:
    """``signals`` for the backtest and, per bar (shape (n,)), the adaptive entry ``threshold``,
    the ``regime`` codes (int8), the ``rel_volatility`` and ``blocked_uncertain`` (True where
    ``p`` cleared the threshold but the uncertainty cap stopped the entry)."""

    signals: Signals
    threshold: np.ndarray
    regime: np.ndarray
    rel_volatility: np.ndarray
    blocked_uncertain: np.ndarray


def policy_signals(
    p: object,
    confidence: object,
    volatility: object,
    ret_1: object,
    cfg: PolicyConfig,
    *,
    uncertainty: object | None = None,
    size_multiplier: float = 1.0,
) -> PolicyOutput:
    """Per-bar instructions decided at the close of each bar, all inputs of shape (n,).

    ``p``: calibrated ``P(up)`` in [0, 1], NaN where there is no prediction (no entry there,
    and both exit flags set, so any position is closed); ``confidence`` in [0, 1] (NaN: no
    entry); ``volatility``: absolute per-bar return std (``vol_20``, > 0), made relative with
    ``relative_volatility(volatility, cfg.vol_lookback)``; ``ret_1``: one-bar log returns for
    ``classify_regimes(ret_1, cfg.regime_lookback, rel_volatility)``; ``uncertainty``: std of
    the MC ``p`` (>= 0; NaN counts as above the cap when ``max_uncertainty`` is set, else as 0);
    ``size_multiplier`` in [0, 1]: the kill-switch's cut of the capped size (0 = no entries).

    ``entry_side`` +1 where ``p >= threshold``, -1 where ``allow_short`` and ``p <= 1 -
    threshold``, else 0, and 0 where uncertainty is above the cap or the size is 0; ``size`` is
    0 off entries; ``exit_long = p < exit_threshold`` and ``exit_short = p > 1 -
    exit_threshold`` (or NaN ``p``), never on a bar entering that side. Causal: bar ``t``
    depends on rows ``<= t`` only.
    """
    pa, conf, vol_abs, ret, unc = _checked_inputs(
        p, confidence, volatility, ret_1, uncertainty, size_multiplier
    )
    rel_vol = relative_volatility(vol_abs, cfg.vol_lookback)
    regime = classify_regimes(ret, cfg.regime_lookback, rel_vol, reference_volatility=REL)
    thr = adaptive_entry_threshold(cfg.base_threshold, regime, rel_vol, reference_volatility=REL)
    size = _sizes(conf, rel_vol, unc, cfg) * size_multiplier
    side, blocked = _entry_sides(pa, thr, size, unc, cfg)
    return PolicyOutput(
        _signals(pa, side, size, rel_vol, cfg), np.asarray(thr), regime, rel_vol, blocked
    )


def _checked_inputs(
    p: object,
    confidence: object,
    volatility: object,
    ret_1: object,
    uncertainty: object | None,
    size_multiplier: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(p, confidence, volatility, ret_1, uncertainty)`` as float64 arrays of one shape (n,)
    (``uncertainty`` may stay None), in the ranges ``policy_signals`` states, else
    ``ValueError``."""
    check_range(size_multiplier, "size_multiplier", 0.0, 1.0)
    pa = check_range(p, "p", 0.0, 1.0, nan_ok=True)
    if pa.ndim != 1 or pa.size == 0:
        raise ValueError(f"p must be a non-empty 1-D array, got shape {pa.shape}")
    conf = check_range(confidence, "confidence", 0.0, 1.0, nan_ok=True)
    vol_abs = np.asarray(volatility, dtype=np.float64)
    ret = np.asarray(ret_1, dtype=np.float64)
    unc = (
        None
        if uncertainty is None
        else check_range(uncertainty, "uncertainty", 0, np.inf, nan_ok=True)
    )
    named = {"p": pa, "confidence": conf, "volatility": vol_abs, "ret_1": ret, "uncertainty": unc}
    shapes = {k: v.shape for k, v in named.items() if v is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"inputs must have one shape (n,), got {shapes}")
    return pa, conf, vol_abs, ret, unc


def _sizes(
    conf: np.ndarray, rel_vol: np.ndarray, unc: np.ndarray | None, cfg: PolicyConfig
) -> np.ndarray:
    """Entry size per bar (n,) before the kill-switch's cut: ``size_from_confidence`` with a
    NaN confidence as 0 and a NaN (or absent) uncertainty as 0."""
    known_unc = np.zeros_like(conf) if unc is None else np.nan_to_num(unc, nan=0.0)
    return size_from_confidence(
        np.nan_to_num(conf, nan=0.0),
        rel_vol,
        1.0,
        cfg.base_size,
        cfg.max_size,
        uncertainty=known_unc,
        min_confidence=cfg.min_confidence,
        uncertainty_scale=cfg.uncertainty_scale,
        reference_volatility=REL,
    )


def _entry_sides(
    pa: np.ndarray, thr: np.ndarray, size: np.ndarray, unc: np.ndarray | None, cfg: PolicyConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``(side, blocked)`` per bar (n,): int8 +1 where ``p >= thr``, -1 where ``allow_short``
    and ``p <= 1 - thr``, else 0, and 0 where the size is 0 or the uncertainty is above the
    cap; ``blocked``: True where only the uncertainty cap stopped an entry."""
    side = np.where(pa >= thr, 1, 0)  # NaN p compares False
    if cfg.allow_short:
        side = np.where(pa <= 1.0 - thr, -1, side)
    blocked = np.zeros(pa.shape, dtype=bool)
    if cfg.max_uncertainty is not None and unc is not None:
        blocked = (side != 0) & ~(unc <= cfg.max_uncertainty)  # NaN uncertainty blocks
    side = np.where(blocked | ~(size > 0), 0, side).astype(np.int8)
    return side, blocked


def _signals(
    pa: np.ndarray, side: np.ndarray, size: np.ndarray, rel_vol: np.ndarray, cfg: PolicyConfig
) -> Signals:
    """The backtest's ``Signals``: sizes at entries only, stop and take-profit distances from
    ``stop_distance_pct``, exits where ``p`` crosses the exit threshold or is NaN."""
    no_p = np.isnan(pa)

    def distance(base_pct: float) -> np.ndarray:
        d = stop_distance_pct(base_pct, rel_vol, reference_volatility=REL)
        return np.asarray(d, dtype=np.float64)

    return Signals(
        entry_side=side,
        size=np.where(side != 0, size, 0.0),
        stop_pct=distance(cfg.base_stop_pct),
        take_profit_pct=distance(cfg.base_take_profit_pct),
        exit_long=(no_p | (pa < cfg.exit_threshold)) & (side != 1),
        exit_short=(no_p | (pa > 1.0 - cfg.exit_threshold)) & (side != -1),
    )
