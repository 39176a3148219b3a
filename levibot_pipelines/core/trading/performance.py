"""Performance statistics of backtests, and the random trade times of the random baseline.

Conventions: ``returns`` are net simple returns per bar (float64, shape (n,), bar order);
``equity`` is a curve of wealth multiples (``cumprod(1 + returns)``); ``timestamps`` are bar
open times in ms UTC. Every scalar is a plain Python ``float`` so results are JSON-serializable.
This module needs nothing from ``core.trading.backtest`` at run time (it re-exports from here).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from levibot_pipelines.core.checks import check_array, check_int_array

if TYPE_CHECKING:
    from levibot_pipelines.core.trading.backtest import BacktestConfig, BacktestResult

DEFAULT_BARS_PER_YEAR = 35040  # 365 * 96 15m bars

MS_PER_DAY = 86_400_000


def sharpe(returns: object, periods_per_year: float) -> float:
    """Annualized Sharpe ratio ``mean / std(ddof=1) * sqrt(periods_per_year)``, no risk-free rate.

    0.0 for a constant series (no dispersion) or fewer than 2 returns (no evidence either
    way). For 15m bars ``periods_per_year`` is 35040; for daily returns of a 24/7 market 365.
    """
    r = check_array(returns, "returns", allow_empty=True)
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be > 0, got {periods_per_year}")
    # A constant series has no dispersion, but its computed std is rounding noise, not 0.
    if r.size < 2 or np.ptp(r) == 0.0:
        return 0.0
    return float(r.mean()) / float(r.std(ddof=1)) * math.sqrt(periods_per_year)


def daily_returns(timestamps: object, returns: object) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar returns compounded per UTC calendar day.

    ``timestamps``: int64 bar open times (ms UTC), non-decreasing, shape (n,); a bar belongs to
    the day its open time falls in. Returns ``(day_start_ms, r_day)``, each of shape (d,), with
    ``r_day = prod(1 + r_bar) - 1`` over the day's bars. Days without bars are absent.
    """
    ts = check_int_array(timestamps, "timestamps", allow_empty=True)
    r = check_array(returns, "returns", allow_empty=True)
    if ts.size != r.size:
        raise ValueError(f"timestamps has {ts.size} rows but returns has {r.size}")
    if r.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    day = ts // MS_PER_DAY
    if (np.diff(day) < 0).any():
        raise ValueError("timestamps must be non-decreasing")
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    return day[starts] * MS_PER_DAY, np.multiply.reduceat(1.0 + r, starts) - 1.0


def probabilistic_sharpe_ratio(returns: object, benchmark: float = 0.0) -> float:
    """Probability that the true per-bar Sharpe ratio exceeds ``benchmark``.

    Bailey & Lopez de Prado (2012), "The Sharpe Ratio Efficient Frontier":
    ``PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2))`` with the
    non-annualized per-bar ``SR = mean / std(ddof=1)``, the sample skewness and the non-excess
    kurtosis (3 for a normal). ``benchmark`` is per bar, like ``SR``. Fewer than 2 returns give
    0.5; a constant series gives 1.0, 0.0 or 0.5 as its mean is above, below or at 0.
    """
    r = check_array(returns, "returns", allow_empty=True)
    if not math.isfinite(benchmark):
        raise ValueError(f"benchmark must be finite, got {benchmark}")
    n = r.size
    if n < 2:
        return 0.5
    mean = float(r.mean())
    if np.ptp(r) == 0.0:
        return 1.0 if mean > 0 else 0.0 if mean < 0 else 0.5
    sr = mean / float(r.std(ddof=1))
    dev = r - mean
    m2 = float(np.mean(dev**2))
    skew = float(np.mean(dev**3)) / m2**1.5
    kurt = float(np.mean(dev**4)) / m2**2
    # kurt >= skew^2 + 1 keeps this >= 0 in exact arithmetic; the floor guards rounding.
    var = max(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2, 1e-12)
    z = (sr - benchmark) * math.sqrt(n - 1) / math.sqrt(var)
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


EULER_GAMMA = 0.5772156649015329


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Expected largest of ``n_trials`` Sharpe ratios whose true value is 0 (Bailey & Lopez de
    Prado 2014): ``sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))``, ``g`` the
    Euler-Mascheroni constant, ``V`` the variance of the trials' Sharpe ratios (per period, the
    units of the result). 0.0 for one trial."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    if not (math.isfinite(sharpe_variance) and sharpe_variance >= 0):
        raise ValueError(f"sharpe_variance must be a finite number >= 0, got {sharpe_variance}")
    if n_trials == 1:
        return 0.0
    inv = NormalDist().inv_cdf
    z = (1 - EULER_GAMMA) * inv(1 - 1 / n_trials) + EULER_GAMMA * inv(1 - 1 / (n_trials * math.e))
    return math.sqrt(sharpe_variance) * z


def deflated_sharpe_ratio(
    returns: object, n_trials: int, sharpe_variance: float | None = None
) -> float:
    """Deflated Sharpe ratio (Bailey & Lopez de Prado 2014): the probabilistic Sharpe ratio of
    ``returns`` against the Sharpe ratio the best of ``n_trials`` skill-less candidates would
    show, ``probabilistic_sharpe_ratio(returns, expected_max_sharpe(n_trials, V))``.

    ``returns``: per-period returns of the chosen candidate, shape (n,); pass daily returns
    (``daily_returns``), as the report does. ``n_trials``: candidates tried (>= 1; 1 gives the
    PSR vs 0). ``sharpe_variance``: variance of the trials' per-period Sharpe ratios; None uses
    the null variance of one Sharpe estimate, ``1 / (n - 1)`` (i.i.d. normal returns, true
    Sharpe 0), for when the trials' Sharpe ratios are not kept."""
    r = check_array(returns, "returns", allow_empty=True)
    variance = 1.0 / max(r.size - 1, 1) if sharpe_variance is None else sharpe_variance
    return probabilistic_sharpe_ratio(r, expected_max_sharpe(n_trials, variance))


def drawdown(equity: object) -> np.ndarray:
    """Fall below the running peak at every point, ``1 - equity / cummax(equity)``, shape (n,):
    a fraction in [0, 1] (0 at a new high, 0.25 = a quarter of the peak lost, 1 = wiped out).

    ``equity``: 1-D, non-empty, finite and >= 0, in time order, starting > 0 (so the running
    peak is never 0)."""
    eq = np.asarray(equity, dtype=np.float64)
    bad = ~(eq >= 0)  # NaN compares False
    if eq.ndim == 1 and bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"equity must be finite and >= 0, got {eq[i]} at index {i}")
    eq = check_array(eq, "equity")
    if eq[0] == 0:
        raise ValueError("equity must start > 0 (the first running peak), got 0.0")
    return _below_peak(eq)


def _below_peak(eq: np.ndarray) -> np.ndarray:
    """``1 - eq / cummax(eq)`` of an equity curve already checked by the caller."""
    return 1.0 - eq / np.maximum.accumulate(eq)


def max_drawdown(equity: object) -> float:
    """Largest fall from a running peak, ``max(drawdown(equity))``, as a positive fraction
    (0.25 = a quarter of the peak lost). ``equity`` must be > 0, shape (n,), n >= 1."""
    eq = check_array(equity, "equity", allow_empty=True)
    if eq.size == 0:
        raise ValueError("equity must not be empty")
    if (eq <= 0).any():
        i = int(np.argmax(eq <= 0))
        raise ValueError(f"equity must be > 0, got {eq[i]} at index {i}")
    return float(np.max(_below_peak(eq)))


def current_drawdown(equity: object) -> float:
    """Fall of the last point below the running peak, ``drawdown(equity)[-1]``: a fraction in
    ``[0, 1]`` (``equity`` as in :func:`drawdown`)."""
    return float(drawdown(equity)[-1])


def win_rate(trade_returns: object) -> float:
    """Fraction of trades with a net return > 0; NaN without trades (undefined)."""
    r = check_array(trade_returns, "trade_returns", allow_empty=True)
    return float(np.mean(r > 0)) if r.size else math.nan


def payoff_ratio(trade_returns: object) -> float:
    """Average winning trade over the absolute average losing trade (losses are returns < 0);
    NaN when there is no win or no loss (undefined)."""
    r = check_array(trade_returns, "trade_returns", allow_empty=True)
    wins, losses = r[r > 0], r[r < 0]
    if wins.size == 0 or losses.size == 0:
        return math.nan
    return float(wins.mean() / abs(losses.mean()))


def backtest_metrics(result: BacktestResult, cfg: BacktestConfig | None = None) -> dict:
    """Summary of a backtest, JSON-ready.

    ``sharpe``: per-bar, annualized with ``sqrt(bars_per_year)``; ``sharpe_daily``: on UTC-day
    compounded returns, ``sqrt(365)``; ``psr``: probabilistic Sharpe ratio of the per-bar
    returns vs 0; ``max_drawdown`` from the starting capital 1.0, a positive fraction;
    ``win_rate`` / ``payoff_ratio`` over the trades' net returns (NaN without trades / without
    a win or a loss; open trades marked at the end count); ``turnover``: traded notional (sum of
    leg sizes, fractions of equity) per day of the span (``n_bars * 365 / bars_per_year``);
    ``exposure``: fraction of bars with a position at the close; ``annual_return``: the total
    return compounded to a year of ``bars_per_year`` bars. ``cfg`` None: 15m bars (35040/yr).
    """
    bars_per_year = DEFAULT_BARS_PER_YEAR if cfg is None else cfg.bars_per_year
    r, eq, n = result.returns, result.equity, result.returns.size
    trades = result.trades
    legs = np.where(trades.get_column("exit_reason").to_numpy() == "end", 1.0, 2.0)
    traded = float(np.sum(trades.get_column("size").to_numpy() * legs))
    net = trades.get_column("net_return").to_numpy()
    final = float(eq[-1])
    _, daily = daily_returns(result.timestamps, r)
    ruined = bool((eq <= 0).any())
    return {
        "sharpe": sharpe(r, bars_per_year),
        "sharpe_daily": sharpe(daily, 365),
        "psr": probabilistic_sharpe_ratio(r),
        "max_drawdown": 1.0 if ruined else max_drawdown(np.r_[1.0, eq]),
        "win_rate": win_rate(net),
        "payoff_ratio": payoff_ratio(net),
        "turnover": traded / (n * 365.0 / bars_per_year),
        "exposure": float(np.mean(result.position != 0)),
        "n_trades": int(trades.height),
        "costs_paid": float(result.costs_paid),
        "total_return": final - 1.0,
        "annual_return": _annualized(final, bars_per_year / n),
        "n_bars": int(n),
    }


def _cap_holds(hold: np.ndarray, budget: int) -> np.ndarray:
    """``min(hold, cap)`` with the largest cap >= 1 whose sum fits ``budget`` (>= len(hold))."""
    lo, hi = 1, int(hold.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(hold, mid).sum() <= budget else (lo, mid - 1)
    return np.minimum(hold, lo)


def random_trade_bars(
    n: int, n_trades: int, mean_bars_held: float, *, allow_short: bool = False, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random non-overlapping trades on ``n`` bars: ``(start, hold, side)``, each shape (n_trades,).

    Trade ``i`` is entered at decision bar ``start[i]`` and exited by the decision at
    ``start[i] + hold[i]`` (so it holds ``hold[i]`` bars under next-open fills); the next entry
    comes after that exit and the last exit decision is at most ``n - 2`` so it fills. Holding
    times are geometric with mean ``max(mean_bars_held, 1)``; when the draw does not fit the
    longest are trimmed. The gaps are a uniform random composition of the idle bars. ``side`` is
    +1, or a fair coin when ``allow_short``.
    """
    if n_trades < 0 or 2 * n_trades > n - 1:
        raise ValueError(f"n_trades must be in [0, (n - 1) // 2 = {(n - 1) // 2}], got {n_trades}")
    if not (math.isfinite(mean_bars_held) and mean_bars_held > 0):
        raise ValueError(f"mean_bars_held must be a finite number > 0, got {mean_bars_held}")
    if n_trades == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty.astype(np.int8)
    rng = np.random.default_rng(seed)
    room = n - 1  # decision bars 0..n-2
    hold = _cap_holds(rng.geometric(1.0 / max(mean_bars_held, 1.0), n_trades), room - n_trades)
    free = room - int(np.sum(hold + 1))
    # Stars and bars: n_trades blocks of hold + 1 bars placed among `free` idle bars.
    slots = np.sort(rng.choice(free + n_trades, size=n_trades, replace=False))
    start = slots - np.arange(n_trades) + np.r_[0, np.cumsum(hold + 1)[:-1]]
    side = rng.choice(np.array([-1, 1], dtype=np.int8), n_trades) if allow_short else None
    return start, hold, np.ones(n_trades, dtype=np.int8) if side is None else side


def _annualized(final: float, years_per_span: float) -> float:
    """``final ** years_per_span - 1`` (-1 after ruin), inf where a float would overflow."""
    if final <= 0:
        return -1.0
    x = math.log(final) * years_per_span
    return math.expm1(x) if x < 700 else math.inf
