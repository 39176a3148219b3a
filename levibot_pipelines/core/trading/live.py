"""The live decision of the decision engine, against the paper position.

At the close of the newest bar the published policy (``core.trading.decision``: chosen with
the champion and stored with it) decides from the paper position that replays what was
published (``core.trading.paper``), with the same rule the backtest validated
(``decision_signals``):

- flat: enter when ``decide_latest`` finds the pessimistic expected return over the policy's
  horizon, net of the round trip, above the margin (and the kill-switch leaves a size > 0);
- holding a side: hold until ``horizon`` bars have passed since the entry decision, then exit
  at the first bar whose pessimistic expected gross return for that side is below
  ``exit_bps`` (or has no score); the exit bar may enter the other side (a reversal) when
  shorting is allowed;
- a FLAT policy enters nothing and closes a position left from an earlier policy at once;
- positions carry no stop or take-profit (the map was fitted on the horizon's returns without
  one); a position published by an earlier policy keeps the levels it was published with.

The size of an entry is the configured maximum size times the kill-switch's multiplier (1
ACTIVE, the reducing factor when REDUCING, 0 HALTED: no entries), the size ``levibot evaluate``
scores the engine at. The regime and the seed policy's adaptive entry threshold are still
reported for the bar (``core.trading.policy``); they do not decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import check_columns, check_range
from levibot_pipelines.core.trading.adaptive import REGIME_NAMES
from levibot_pipelines.core.trading.backtest import (
    Action,
    BacktestConfig,
    BacktestResult,
    Signals,
)
from levibot_pipelines.core.trading.decision import (
    DecisionPolicy,
    ExpectedReturnMap,
    decide_latest,
    expected_gross_bps,
)
from levibot_pipelines.core.trading.paper import (
    HISTORY_COLUMNS,
    newest_intent,
    position_and_levels,
    replay,
    up_to,
)
from levibot_pipelines.core.trading.performance import current_drawdown
from levibot_pipelines.core.trading.policy import PolicyConfig

SIDE_NAMES = {1: "long", -1: "short"}


@dataclass(frozen=True)
class LiveDecision:
    """What the publisher writes for one symbol's newest bar: ``signal`` (an ``Action`` name
    decided at its close), the entry ``size`` (0 unless an entry), the signed ``position``
    held once it fills, ``closed_side`` (``"long"`` / ``"short"``: the side an ``EXIT`` or a
    reversal closes, else None), the held position's ``stop_loss`` / ``take_profit`` levels
    (None for the engine's positions), the policy's ``horizon`` (None for FLAT),
    ``expected_net_bps`` (an entry's pessimistic expected return over the horizon net of the
    round trip, None for FLAT or without a score), the ``reason`` in words and the policy's
    ``decision_model``; then the bar's regime and the seed policy's entry threshold (reported,
    not deciding) and the paper equity and drawdown after the decision."""

    signal: str
    size: float
    position: float
    closed_side: str | None
    stop_loss: float | None
    take_profit: float | None
    horizon: int | None
    expected_net_bps: float | None
    reason: str
    decision_model: str
    entry_threshold: float
    regime: str
    regime_state: int
    paper_equity: float
    paper_drawdown: float


@dataclass(frozen=True)
class EngineInputs:
    """The published policy and its map (None for FLAT), the policy model's ``score`` at the
    newest bar (higher = up, NaN without one) and its ``uncertainty`` in score units (None or
    NaN when the model has none)."""

    policy: DecisionPolicy
    emap: ExpectedReturnMap | None
    score: float
    uncertainty: float | None = None


def live_decision(
    candles: pl.DataFrame,
    features: pl.DataFrame,
    history: pl.DataFrame,
    *,
    bar_time: int,
    engine: EngineInputs,
    p: float,
    confidence: float,
    seed_policy: PolicyConfig,
    cfg: BacktestConfig,
    size_multiplier: float = 1.0,
) -> LiveDecision:
    """Decide at the close of ``bar_time`` for one symbol (module docstring).

    ``candles``: the symbol's bars up to and including ``bar_time`` (``timestamp, open, high,
    low, close``); ``features``: its feature rows (``timestamp, vol_20, ret_1``), the newest at
    ``bar_time``; ``history``: earlier published rows (``HISTORY_COLUMNS``, one per bar);
    ``p`` / ``confidence``: the ensemble's at ``bar_time`` (for the reported regime and
    threshold); ``seed_policy``: its ``max_size`` sizes entries; ``size_multiplier`` in [0, 1]:
    the kill-switch's.
    """
    check_columns("history", history.columns, HISTORY_COLUMNS)
    check_range(size_multiplier, "size_multiplier", 0.0, 1.0)
    candles, ts, feats = up_to(candles, features, bar_time)
    seed = newest_intent(feats, p, confidence, None, seed_policy, size_multiplier)
    size = seed_policy.max_size * size_multiplier
    # The paper book up to the newest close: a decision at the newest bar cannot fill inside
    # the replay, so this one replay serves both the position it is decided from and the
    # equity and levels reported after it.
    book = replay(candles, ts, history, bar_time, _intent(0, 0.0, ()), cfg)
    side, bars_held = _held(book)
    signal, intent, net, reason = _decide(engine, side, bars_held, size)
    closes = bool(intent.exit_long[0] or intent.exit_short[0]) and side != 0
    close = float(candles.get_column("close").to_numpy()[-1])
    entry_size, position, stop_loss, take_profit = position_and_levels(
        Action[signal], intent, book, close
    )
    equity = np.asarray(book.equity)
    regime_state = int(seed.regime[-1])
    policy = engine.policy
    return LiveDecision(
        signal=signal,
        size=entry_size,
        position=position,
        closed_side=SIDE_NAMES[side] if closes else None,
        stop_loss=stop_loss,
        take_profit=take_profit,
        horizon=None if policy.is_flat else policy.horizon,
        expected_net_bps=net,
        reason=reason,
        decision_model=policy.model,
        entry_threshold=float(seed.threshold[-1]),
        regime=REGIME_NAMES[regime_state],
        regime_state=regime_state,
        paper_equity=float(equity[-1]),
        # A ruined paper account (equity at or below 0, possible with shorts) is a full
        # drawdown, which halts trading; it must not fail the publish.
        paper_drawdown=current_drawdown(np.maximum(equity, 0.0)),
    )


def _intent(entry: int, size: float, exits: tuple[int, ...]) -> Signals:
    """The newest bar's instruction as one-row ``Signals``: enter ``entry`` (+1/-1, 0 none)
    with ``size``, close the sides in ``exits``; no stop or take-profit."""
    nan = np.full(1, np.nan)
    return Signals(
        np.array([entry], dtype=np.int8),
        np.array([size if entry else 0.0]),
        nan,
        nan.copy(),
        np.array([1 in exits]),
        np.array([-1 in exits]),
    )


def _held(result: BacktestResult) -> tuple[int, int]:
    """``(side, bars)`` of the position held at the newest close of the replay ``result``:
    the side (+1, -1, 0 flat) and the bars since its entry was decided (the bar before its
    fill); 0 bars when flat."""
    pos = float(result.position[-1])
    if pos == 0.0:
        return 0, 0
    trades = result.trades
    fill_ts = int(trades.get_column("entry_ts").to_numpy()[-1])
    fill = int(np.searchsorted(result.timestamps, fill_ts))
    return (1 if pos > 0 else -1), len(result.timestamps) - fill


def _decide(
    engine: EngineInputs, side: int, bars_held: int, size: float
) -> tuple[str, Signals, float | None, str]:
    """``(signal, intent, expected_net_bps, reason)`` of the rule (module docstring)."""
    policy = engine.policy
    entry = decide_latest(policy, engine.emap, engine.score, engine.uncertainty)
    net = entry.expected_net_bps
    wants = {"LONG": 1, "SHORT": -1}.get(entry.signal, 0)
    if side == 0:
        if wants and size > 0:
            return _entry(wants), _intent(wants, size, ()), net, entry.reason
        if wants:
            why = f"no entry: kill-switch halted ({entry.reason})"
            return "HOLD", _intent(0, 0.0, ()), net, why
        return "HOLD", _intent(0, 0.0, ()), net, entry.reason
    held = SIDE_NAMES[side]
    if policy.is_flat:
        why = f"exit {held}: {policy.reason} (a position of an earlier policy)"
        return "EXIT", _intent(0, 0.0, (side,)), net, why
    if bars_held < policy.horizon:
        why = f"holding {held}: {bars_held} of {policy.horizon} bars"
        return "HOLD", _intent(0, 0.0, ()), net, why
    unc = None if engine.uncertainty is None else [engine.uncertainty]
    g_long, g_short = expected_gross_bps(policy, engine.emap, [engine.score], unc)
    gross = float((g_long if side == 1 else g_short)[0])
    if gross >= policy.exit_bps:  # NaN (no score) compares False: exit
        why = f"holding {held}: expected gross {gross:+.1f} bps >= exit level {policy.exit_bps:g}"
        return "HOLD", _intent(0, 0.0, ()), net, why
    why = "no score" if math.isnan(gross) else f"expected gross {gross:+.1f} bps"
    why = f"exit {held}: {why} below the exit level {policy.exit_bps:g} bps"
    if wants == -side and size > 0:  # a reversal at the same open
        return _entry(wants), _intent(wants, size, (side,)), net, f"{why}; {entry.reason}"
    return "EXIT", _intent(0, 0.0, (side,)), net, why


def _entry(side: int) -> str:
    return "ENTRY_LONG" if side == 1 else "ENTRY_SHORT"
