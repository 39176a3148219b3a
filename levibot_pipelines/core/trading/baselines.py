"""The baselines a policy's backtest is judged against, and the comparison itself.

Flat (never trade), buy-and-hold (long from the first fill to the end), a random policy with the
policy's own number of trades and mean holding time, the policy at twice the costs and the
policy gross of costs; ``compare`` backtests each once on the same candles
(``core.trading.backtest``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from levibot_pipelines.core.checks import check_min
from levibot_pipelines.core.trading.backtest import (
    BacktestConfig,
    BacktestResult,
    Signals,
    run_backtest,
)
from levibot_pipelines.core.trading.performance import backtest_metrics, random_trade_bars


def flat_signals(n: int) -> Signals:
    """Never trade: every array of length ``n`` empty (no entries, no exits, no levels)."""
    check_min("n", n, 1)
    return Signals(
        entry_side=np.zeros(n, dtype=np.int8),
        size=np.zeros(n),
        stop_pct=np.full(n, np.nan),
        take_profit_pct=np.full(n, np.nan),
        exit_long=np.zeros(n, dtype=bool),
        exit_short=np.zeros(n, dtype=bool),
    )


def buy_and_hold_signals(n: int) -> Signals:
    """Enter long with size 1 at the close of bar 0 (fills at ``open(1)``), never exit."""
    s = flat_signals(n)
    s.entry_side[0], s.size[0] = 1, 1.0
    return s


def random_signals(
    n: int,
    n_trades: int,
    mean_bars_held: float,
    size: float,
    *,
    allow_short: bool = False,
    seed: int,
) -> Signals:
    """A random policy: ``n_trades`` non-overlapping trades at uniformly random times, holding
    times geometric with mean ``mean_bars_held`` (at least 1 bar), constant ``size``, no stops.

    Trade ``i`` enters at decision bar ``t_i`` and its exit flag is at ``t_i + h_i``, so under
    ``next_open`` it holds ``h_i`` bars; the next entry comes after that exit and the last exit
    fills by bar ``n - 1``. Sides are long, or a fair coin when ``allow_short``. When the drawn
    holding times do not fit in ``n`` bars the longest are trimmed.
    """
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"size must be a finite number > 0, got {size}")
    s = flat_signals(n)
    start, hold, sides = random_trade_bars(
        n, n_trades, mean_bars_held, allow_short=allow_short, seed=seed
    )
    s.entry_side[start], s.size[start] = sides, size
    s.exit_long[start + hold] = s.exit_short[start + hold] = True
    return s


@dataclass(frozen=True)
class Run:
    """One backtest of a comparison: the result and its metrics under the costs it ran with."""

    result: BacktestResult
    metrics: dict


def compare(
    timestamps: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    signals: Signals,
    cfg: BacktestConfig,
    *,
    seed: int = 0,
) -> dict[str, Run]:
    """The policy next to its baselines on the same candles and costs, each backtested once.

    Keys: ``policy``, ``buy_and_hold``, ``flat``, ``random`` (``random_signals`` with the
    policy's trade count, capped at ``(n - 1) // 2``, mean ``bars_held``, mean size and short
    side if the policy shorted; seeded by ``seed``), ``policy_2x_costs`` and ``policy_gross``
    (the policy with zero costs: what its trades earn before fees and slippage). Metrics use
    the costs each run had, except ``policy_gross``, whose metrics keep ``cfg``'s settings.
    """
    prices = (timestamps, open_, high, low, close)
    policy = run_backtest(*prices, signals, cfg)
    n = policy.returns.size
    tr = policy.trades
    n_trades = min(tr.height, (n - 1) // 2)
    random = flat_signals(n)
    if n_trades:
        random = random_signals(
            n,
            n_trades,
            max(float(tr.get_column("bars_held").mean()), 1.0),
            float(tr.get_column("size").mean()),
            allow_short=bool((tr.get_column("side") < 0).any()),
            seed=seed,
        )
    runs = {
        "buy_and_hold": (buy_and_hold_signals(n), cfg),
        "flat": (flat_signals(n), cfg),
        "random": (random, cfg),
        "policy_2x_costs": (signals, replace(cfg, costs=cfg.costs.scaled(2.0))),
        "policy_gross": (signals, replace(cfg, costs=cfg.costs.scaled(0.0))),
    }
    out = {"policy": Run(policy, backtest_metrics(policy, cfg))}
    for name, (sig, c) in runs.items():
        result = run_backtest(*prices, sig, c)
        out[name] = Run(result, backtest_metrics(result, cfg if name == "policy_gross" else c))
    return out
