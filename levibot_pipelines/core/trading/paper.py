"""The paper portfolio: the backtest of what was actually published.

Each published decision (``ENTRY_LONG``, ``ENTRY_SHORT``, ``EXIT``, ``HOLD``, with its size,
stop and take-profit) is replayed through ``core.trading.backtest`` on the real candles, fills
at the next open, stops inside the bars, costs on both legs; an entry published while the other
side is held is a reversal at the same open. The newest bar's decision depends on that position
(an entry only from flat, an exit only when holding), so the replay runs up to the newest bar
before it is decided (``core.trading.live``; a decision at the newest bar cannot fill there), and
its equity is the live paper P&L whose drawdown can halt trading (``core.trading.killswitch``).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from levibot_pipelines.core.trading.backtest import (
    Action,
    BacktestConfig,
    BacktestResult,
    Signals,
    run_backtest,
)
from levibot_pipelines.core.trading.policy import PolicyConfig, PolicyOutput, policy_signals

HISTORY_COLUMNS = ("bar_time", "signal", "size", "close", "stop_loss", "take_profit")


def _replayed_signals(ts: np.ndarray, history: pl.DataFrame, newest: Signals) -> Signals:
    """Past published decisions on the candle grid (nothing where nothing was published),
    with the policy's intent ``newest`` (length 1) at the newest bar, the last row."""
    n = len(ts)
    entry = np.zeros(n, dtype=np.int8)
    size = np.zeros(n)
    stop = np.full(n, np.nan)
    tp = np.full(n, np.nan)
    exit_flag = np.zeros(n, dtype=bool)
    if history.height:
        rows = np.searchsorted(ts, history.get_column("bar_time").to_numpy())
        on_grid = (rows < n) & (
            ts[np.minimum(rows, n - 1)] == history.get_column("bar_time").to_numpy()
        )
        h = history.filter(pl.Series(on_grid))
        rows = rows[on_grid]
        sig = h.get_column("signal").to_numpy()
        close = h.get_column("close").to_numpy()
        entry[rows] = np.where(sig == "ENTRY_LONG", 1, np.where(sig == "ENTRY_SHORT", -1, 0))
        size[rows] = h.get_column("size").fill_null(0.0).to_numpy()
        stop[rows] = np.abs(h.get_column("stop_loss").fill_null(np.nan).to_numpy() / close - 1)
        tp[rows] = np.abs(h.get_column("take_profit").fill_null(np.nan).to_numpy() / close - 1)
        exit_flag[rows] = sig == "EXIT"
    # An entry published while holding the other side is a reversal at the same open.
    exit_long, exit_short = exit_flag | (entry == -1), exit_flag | (entry == 1)
    entry[-1], size[-1] = newest.entry_side[0], newest.size[0]
    stop[-1], tp[-1] = newest.stop_pct[0], newest.take_profit_pct[0]
    exit_long[-1], exit_short[-1] = newest.exit_long[0], newest.exit_short[0]
    return Signals(entry, size, stop, tp, exit_long, exit_short)


def up_to(
    candles: pl.DataFrame, features: pl.DataFrame, bar_time: int
) -> tuple[pl.DataFrame, np.ndarray, pl.DataFrame]:
    """``(candles, their timestamps as int64, feature rows)`` sorted and cut at ``bar_time``
    (ms UTC, inclusive); ``ValueError`` unless both end exactly at ``bar_time``."""
    candles = candles.sort("timestamp").filter(pl.col("timestamp") <= bar_time)
    ts = candles.get_column("timestamp").to_numpy().astype(np.int64)
    if len(ts) == 0 or ts[-1] != bar_time:
        raise ValueError(f"no candle at bar_time {bar_time}: the candles end at {ts[-1:]}")
    feats = features.sort("timestamp").filter(pl.col("timestamp") <= bar_time)
    if feats.is_empty() or feats.get_column("timestamp")[-1] != bar_time:
        raise ValueError(f"no feature row at bar_time {bar_time}")
    return candles, ts, feats


def newest_intent(
    feats: pl.DataFrame,
    p: float,
    confidence: float,
    uncertainty: float | None,
    policy: PolicyConfig,
    size_multiplier: float,
) -> PolicyOutput:
    """The policy over the feature rows (``vol_20``, ``ret_1``) with the ensemble's output at
    the newest row only (NaN before it: the past is replayed from what was published)."""
    n_f = feats.height
    p_arr = np.full(n_f, np.nan)
    conf_arr = np.full(n_f, np.nan)
    p_arr[-1], conf_arr[-1] = p, confidence
    unc = None
    if uncertainty is not None:
        unc = np.full(n_f, np.nan)
        unc[-1] = uncertainty
    return policy_signals(
        p_arr,
        conf_arr,
        feats.get_column("vol_20").to_numpy(),
        feats.get_column("ret_1").to_numpy(),
        policy,
        uncertainty=unc,
        size_multiplier=size_multiplier,
    )


def replay(
    candles: pl.DataFrame,
    ts: np.ndarray,
    history: pl.DataFrame,
    bar_time: int,
    last: Signals,
    cfg: BacktestConfig,
) -> BacktestResult:
    """The backtest of the decisions published before ``bar_time`` and the intent ``last`` at
    it, over the candles from the first published bar (only the newest when none was)."""
    past = history.filter(pl.col("bar_time") < bar_time).sort("bar_time")
    first = int(past.get_column("bar_time").min()) if past.height else bar_time
    span = ts >= first
    ts_span = ts[span]
    signals = _replayed_signals(ts_span, past, last)
    prices = [candles.get_column(c).to_numpy()[span] for c in ("open", "high", "low", "close")]
    return run_backtest(ts_span, *prices, signals, cfg)


def position_and_levels(
    action: Action, last: Signals, result: BacktestResult, close: float
) -> tuple[float, float, float | None, float | None]:
    """``(entry size, position, stop_loss, take_profit)`` after the newest decision ``action``:
    a new entry's size and its levels estimated from the newest ``close`` (the fill is the next
    open), else the replay's position and the levels it holds (None when flat or not finite)."""
    side = {Action.ENTRY_LONG: 1, Action.ENTRY_SHORT: -1}.get(action, 0)
    entry_size = float(last.size[0]) if side else 0.0
    if action is Action.EXIT:
        position = 0.0
    elif side:
        position = side * entry_size
    else:
        position = float(result.position[-1])
    stop_loss = take_profit = None
    if side:
        stop_loss = close * (1 - side * float(last.stop_pct[0]))
        take_profit = close * (1 + side * float(last.take_profit_pct[0]))
    elif position != 0.0:
        stop_loss = _level(result.stop_level[-1])
        take_profit = _level(result.take_profit_level[-1])
    return entry_size, position, _finite(stop_loss), _finite(take_profit)


def _level(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None
