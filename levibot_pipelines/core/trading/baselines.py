"""The baselines a policy's backtest is judged against, and the comparison itself.

Flat (never trade), buy-and-hold (long from the first fill to the end), a random policy with the
policy's own number of trades and mean holding time, the policy at twice the costs and the
policy gross of costs; ``compare`` backtests each once on the same candles
(``core.trading.backtest``). ``reversal_signals`` is the one-line "reverse the last bar" rule as
a policy; ``random_distribution`` the random policy over ``N_RANDOM_SEEDS`` seeds, reported as
quantiles with the policy's place among them.
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
from levibot_pipelines.core.trading.performance import (
    backtest_metrics,
    daily_returns,
    random_trade_bars,
    sharpe,
)

N_RANDOM_SEEDS = 200  # seeds of the random-policy distribution (``random_distribution``)
QUANTILES = {"q05": 0.05, "q50": 0.50, "q95": 0.95}  # its reported quantiles


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


def reversal_signals(close: np.ndarray, *, allow_short: bool = False) -> Signals:
    """The reversal rule as a policy: at the close of bar ``t``, long with size 1 after a down
    bar (``close[t] < close[t-1]``), short after an up bar when ``allow_short`` (else flat), flat
    after an unchanged close and at bar 0 (no previous close). ``close``: shape (n,), n >= 1.

    Each decision holds for one bar: it fills at ``open(t+1)`` and the decision at the close of
    ``t+1`` exits at ``open(t+2)``, unless it wants the same side again, when the position is
    kept (closing and reopening at the same open would only pay a round trip); a change of side
    is a reversal at one open, both legs charged (``run_backtest``).
    """
    c = np.asarray(close, dtype=np.float64)
    s = flat_signals(c.size)
    move = np.r_[0.0, np.diff(c)]
    want = np.where(move < 0, 1, np.where(move > 0, -1 if allow_short else 0, 0))
    s.entry_side[:] = want
    s.size[want != 0] = 1.0
    s.exit_long[:] = want != 1
    s.exit_short[:] = want != -1
    return s


def random_spec(policy: BacktestResult) -> tuple[int, float, float, dict] | None:
    """The random twin of a policy backtest: ``(n_trades, mean_bars_held, size, {"allow_short":
    shorted})``, the policy's trade count capped at ``(n - 1) // 2``, its mean ``bars_held``
    (at least 1), mean size and whether it shorted; None when it did not trade."""
    n, tr = policy.returns.size, policy.trades
    n_trades = min(tr.height, (n - 1) // 2)
    if not n_trades:
        return None
    return (
        n_trades,
        max(float(tr.get_column("bars_held").mean()), 1.0),
        float(tr.get_column("size").mean()),
        {"allow_short": bool((tr.get_column("side") < 0).any())},
    )


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
    spec = random_spec(policy)
    random = flat_signals(n) if spec is None else random_signals(n, *spec[:3], **spec[3], seed=seed)
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


def random_trade_returns(
    open_: np.ndarray, close: np.ndarray, spec: tuple, cfg: BacktestConfig, *, seed: int
) -> np.ndarray:
    """Net per-bar returns (n,) of ``random_signals(n, *spec, seed=seed)`` under ``next_open``
    fills, computed directly from the trades' fill prices instead of the event loop.

    Exact, not an approximation, for this policy's shape (``test_baselines`` checks it against
    ``run_backtest``): its trades never overlap, have no stops and all exit on a signal that
    fills (the last exit decision is at bar ``n - 2`` at most). Trade ``i`` (``w = side *
    size``) fills at ``fb = start + 1``, exits at ``eb = start + hold + 1``; bar ``fb`` returns
    ``w (close[fb] / fill_in - 1) - fee``, held bars ``w (close[j] / close[j-1] - 1)``, bar
    ``eb`` ``w (fill_out / close[eb-1] - 1) - fee``, ``fee = fee_bps 1e-4 size`` per leg and
    fills moved ``slippage_bps`` against the trade. ``spec``: ``random_spec``'s tuple.
    """
    o, c = np.asarray(open_, dtype=np.float64), np.asarray(close, dtype=np.float64)
    n = c.size
    n_trades, mean_held, size, opts = spec
    start, hold, side = random_trade_bars(n, n_trades, mean_held, seed=seed, **opts)
    fee, slip = cfg.costs.fee_bps * 1e-4 * size, cfg.costs.slippage_bps * 1e-4
    fb, eb, w = start + 1, start + hold + 1, side * size
    delta = np.zeros(n + 1)
    delta[fb], delta[eb] = w, -w  # disjoint: eb of a trade <= start of the next
    position = np.cumsum(delta[:n])
    r = np.zeros(n)
    r[1:] = position[:-1] * (c[1:] / c[:-1] - 1.0)
    r[fb] = w * (c[fb] / (o[fb] * (1 + side * slip)) - 1) - fee
    r[eb] = w * (o[eb] * (1 - side * slip) / c[eb - 1] - 1) - fee
    return r


def random_distribution(
    timestamps: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    policy: BacktestResult,
    cfg: BacktestConfig,
    *,
    seed: int = 0,
    n_seeds: int = N_RANDOM_SEEDS,
) -> dict:
    """The random twin of ``policy`` (``random_spec``) over ``n_seeds`` seeds drawn from
    ``SeedSequence(seed)``, on the same candles and costs as ``compare``'s ``random``.

    Returns ``{"n_seeds", "total_return", "sharpe_daily", "n_trades", "policy_percentile"}``:
    each metric as its ``QUANTILES`` over the seeds (``{"q05", "q50", "q95"}``, linear
    interpolation), and the fraction of seeds whose total return is strictly below the
    policy's (1.0: the policy beat every random seed). A policy without trades has a flat twin.
    """
    check_min("n_seeds", n_seeds, 1)
    if cfg.fill != "next_open":
        raise ValueError(f"random_distribution models next_open fills, got fill={cfg.fill!r}")
    spec = random_spec(policy)
    totals, sharpes = np.zeros(n_seeds), np.zeros(n_seeds)
    if spec is not None:
        for i, s in enumerate(np.random.SeedSequence(seed).generate_state(n_seeds)):
            r = random_trade_returns(open_, close, spec, cfg, seed=int(s))
            totals[i] = np.prod(1.0 + r) - 1.0
            sharpes[i] = sharpe(daily_returns(timestamps, r)[1], 365)
    trades = np.full(n_seeds, 0 if spec is None else spec[0], dtype=np.float64)

    def quantiles(x: np.ndarray) -> dict[str, float]:
        return {k: float(np.quantile(x, q)) for k, q in QUANTILES.items()}

    return {
        "n_seeds": int(n_seeds),
        "total_return": quantiles(totals),
        "sharpe_daily": quantiles(sharpes),
        "n_trades": quantiles(trades),
        "policy_percentile": float(np.mean(totals < float(policy.equity[-1]) - 1.0)),
    }
