"""Targets aligned with execution: forward log returns from the fill at ``open(t+1)``.

A decision taken at the close of bar ``t`` fills at ``open(t+1)`` (``core.trading.backtest``), so
the return a trade entered at ``t`` and held ``h`` bars earns, before costs, is

    r_h[t] = log(open[t + 1 + h] / open[t + 1])

(enter at the fill ``open(t+1)``, leave at ``open(t+1+h)``, the fill of an exit decided at the
close of ``t + h``). ``r_h[t]`` is NaN where ``open[t + 1 + h]`` is not in the input (the last
``h + 1`` bars): it is known only once bar ``t + 1 + h`` has opened, so a model fitted on it at
time ``T`` may use only samples ``t <= T - 1 - h`` (the purge of ``splits.min_purge``).

``planted_edge_market`` builds the seeded price paths of the decision engine's positive and
negative controls (a random walk whose score predicts the ``h``-bar forward return, or does not).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import check_array, check_int, check_range, require_all

BAR_MS = 900_000  # 15 minutes


def forward_log_returns(open_: object, horizon: int) -> np.ndarray:
    """``r_h[t] = log(open[t + 1 + h] / open[t + 1])`` for ``h = horizon`` (module docstring).

    ``open_``: bar open prices, shape (n,), finite and > 0, in time order; ``horizon``: bars
    held, >= 1. Returns float64 log returns of shape (n,), NaN for ``t > n - 2 - h``.
    """
    o = check_array(open_, "open")
    require_all(o > 0, "open must be > 0", o)
    h = check_int("horizon", horizon, 1)
    out = np.full(o.size, np.nan)
    m = o.size - 1 - h  # number of t with t + 1 + h <= n - 1
    if m > 0:
        lo = np.log(o)
        out[:m] = lo[1 + h :] - lo[1 : 1 + m]
    return out


def forward_log_returns_multi(open_: object, horizons: Sequence[int]) -> dict[int, np.ndarray]:
    """``{h: forward_log_returns(open_, h)}`` for every distinct ``h`` in ``horizons`` (e.g.
    the configured ``(1, 4, 16, 48)``), in the given order; ``horizons`` must not be empty."""
    if len(horizons) == 0:
        raise ValueError("horizons must name at least one horizon, got []")
    return {int(h): forward_log_returns(open_, h) for h in dict.fromkeys(horizons)}


def planted_edge_market(
    n: int,
    *,
    edge_bps: float,
    horizon: int,
    seed: int,
    event_rate: float = 0.04,
    sigma_bps: float = 20.0,
    start_ms: int = 1_700_000_000_000 // BAR_MS * BAR_MS,
) -> pl.DataFrame:
    """A seeded random walk of ``n`` 15m bars with a score that predicts ``r_h`` by ``edge_bps``.

    Per bar the log open moves by ``N(0, sigma_bps)`` bps. Each bar ``t`` is an event with
    probability ``event_rate``, up or down with equal odds; an event adds ``+-edge_bps /
    horizon`` to each of the moves ``open[t+1+j] -> open[t+2+j]``, ``j < horizon``, so
    ``E[r_h[t] | up event] = +edge_bps`` for ``h = horizon`` (``-edge_bps`` after a down event,
    0 on average: no trend). ``score`` is drawn ``U(0.6, 1)`` at up events, ``U(0, 0.1)`` at
    down events and ``U(0.1, 0.5)`` elsewhere; ``edge_bps=0`` gives a pure random walk with a
    score that carries no information (the negative control). ``close[t] = open[t + 1]`` (no
    gaps; the last close is one more move); ``high``/``low`` add a half-normal wick of
    ``sigma_bps / 2``.

    Returns a frame with ``timestamp`` (int64 ms UTC), ``open``, ``high``, ``low``, ``close``,
    ``score`` and ``event`` (int8: +1 up, -1 down, 0 none), shape (n, 7).
    """
    n = check_int("n", n, 2)
    h = check_int("horizon", horizon, 1)
    check_range(edge_bps, "edge_bps", -1e4, 1e4)
    check_range(event_rate, "event_rate", 0.0, 1.0)
    check_range(sigma_bps, "sigma_bps", 0.0, 1e4)
    rng = np.random.default_rng(seed)
    u, side = rng.random(n), np.where(rng.random(n) < 0.5, 1, -1)
    event = np.where(u < event_rate, side, 0)
    score = np.select(
        [event > 0, event < 0],
        [rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.1, n)],
        rng.uniform(0.1, 0.5, n),
    )
    # drift of move k (open[k] -> open[k+1]): events at t with t + 1 <= k <= t + h.
    starts = np.cumsum(np.r_[0, event])  # starts[k] = signed events at t < k
    k = np.arange(n)
    active = starts[k] - starts[np.maximum(k - h, 0)]
    moves = rng.normal(0.0, sigma_bps, n) + active * edge_bps / h
    log_open = np.log(100.0) + np.r_[0.0, np.cumsum(moves[:-1])] * 1e-4
    open_ = np.exp(log_open)
    close = np.exp(np.r_[log_open[1:], log_open[-1] + moves[-1] * 1e-4])
    wick = np.abs(rng.normal(0.0, sigma_bps / 2, (2, n))) * 1e-4
    return pl.DataFrame(
        {
            "timestamp": start_ms + BAR_MS * k,
            "open": open_,
            "high": np.maximum(open_, close) * np.exp(wick[0]),
            "low": np.minimum(open_, close) * np.exp(-wick[1]),
            "close": close,
            "score": score,
            "event": event.astype(np.int8),
        }
    )
