"""The event loop of ``core.trading.backtest``: one step per trade, each exit found with
vectorized searches (the signal-exit flags by a "next index" table, stop and take-profit
touches by ``_first_touch``), so the Python loop runs over trades, not bars. Its per-trade
columns become arrays (``trade_legs``) and the trade held at each close (``held_trade_ids``).

Time alignment as in ``core.trading.backtest``: a decision at the close of ``t`` fills at
``open(t+1)`` (``lag`` 1); stops and take-profits are checked inside every held bar, adverse
first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from levibot_pipelines.core.trading.backtest import Signals

# Exit reason codes, indices into ``core.trading.backtest.EXIT_REASONS``.
SIGNAL, STOP, TP, END = range(4)


def _next_index(mask: np.ndarray) -> np.ndarray:
    """``nxt[t]`` = the first ``i >= t`` with ``mask[i]``, else ``n``; length ``n + 1``."""
    n = mask.size
    idx = np.where(mask, np.arange(n), n)
    return np.r_[np.minimum.accumulate(idx[::-1])[::-1], n]


def _first_touch(
    side: int, stop: float, tp: float, a: int, b: int, bars: tuple[np.ndarray, ...]
) -> int:
    """First bar in ``[a, b]`` whose range touches ``stop`` or ``tp`` (NaN never touches), else
    -1. ``bars`` = (high, low, high list, low list). The first few bars are checked one by one
    (most trades end there and a Python comparison is cheaper than a numpy call), then chunks
    of 64, 256, 1024... bars are scanned vectorized."""
    high, low, hl, lol = bars
    e = min(a + 4, b + 1)
    for j in range(a, e):
        if side > 0 and (lol[j] <= stop or hl[j] >= tp):
            return j
        if side < 0 and (hl[j] >= stop or lol[j] <= tp):
            return j
    a, chunk = e, 64
    while a <= b:
        e = min(a + chunk, b + 1)
        if side > 0:
            hit = (low[a:e] <= stop) | (high[a:e] >= tp)
        else:
            hit = (high[a:e] >= stop) | (low[a:e] <= tp)
        i = int(hit.argmax())
        if hit[i]:
            return a + i
        a, chunk = e, chunk * 4
    return -1


def walk_trades(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, s: Signals, lag: int, slip: float
) -> tuple[dict[str, list], list[int], list[int]]:
    """The event loop over trades. ``lag`` 1: a decision at ``t`` fills at ``open(t+1)``; 0:
    at ``close(t)`` (look-ahead). Returns per-trade columns, entry decision bars (filled or
    not) and signal-exit decision bars (filled or not)."""
    n = len(c)
    valid = (s.entry_side != 0) & (s.size > 0)
    # The loop reads single elements, several times faster from lists than from arrays; the
    # conversion pays off only when many bars can start a trade.
    seq = np.ndarray.tolist if int(valid.sum()) > n // 8 else np.asarray
    next_entry = seq(_next_index(valid))
    next_exit = {1: seq(_next_index(s.exit_long)), -1: seq(_next_index(s.exit_short))}
    sides, valid_l = seq(s.entry_side), seq(valid)
    stop_pct, tp_pct = seq(s.stop_pct), seq(s.take_profit_pct)
    ol, cl, hl, lol = seq(o), seq(c), seq(h), seq(lo)
    bars = (h, lo, hl, lol)
    cols: dict[str, list] = {k: [] for k in ("t", "fb", "eb", "raw_in", "raw_out", "reason")}
    cols.update(stop=[], tp=[])
    add = [v.append for v in cols.values()]
    entry_act: list[int] = []
    exit_act: list[int] = []
    t = next_entry[0]
    while t < n:
        side = sides[t]
        entry_act.append(t)
        fb = t + lag
        if fb >= n:
            break
        raw_in = ol[fb] if lag else cl[t]
        fill_in = raw_in * (1 + side * slip)
        stop = fill_in * (1 - side * stop_pct[t])
        tp = fill_in * (1 + side * tp_pct[t])
        k = next_exit[side][t + 1]
        # Stops are live from the first bar after the decision up to the bar whose close
        # decides the exit (a next_open exit fills at the following open, before its range).
        no_levels = math.isnan(stop) and math.isnan(tp)
        j = -1 if no_levels else _first_touch(side, stop, tp, t + 1, min(k, n - 1), bars)
        reversal = k < n and sides[k] == -side and valid_l[k]
        if j >= 0:
            # Adverse first: when both levels are inside the bar's range, the stop was hit.
            if (lol[j] <= stop) if side > 0 else (hl[j] >= stop):
                reason, raw_out = STOP, (min if side > 0 else max)(ol[j], stop)
            else:
                reason, raw_out = TP, (max if side > 0 else min)(ol[j], tp)
            eb, t_next = j, j
        elif k + lag < n:
            reason, eb, raw_out = SIGNAL, k + lag, ol[k + 1] if lag else cl[k]
            exit_act.append(k)
            t_next = k if reversal else k + 1
        else:
            reason, eb, raw_out = END, n - 1, cl[n - 1]
            if k < n:
                exit_act.append(k)
            t_next = k if reversal else n
        for append, v in zip(add, (t, fb, eb, raw_in, raw_out, reason, stop, tp), strict=True):
            append(v)
        t = next_entry[t_next]
    return cols, entry_act, exit_act


class TradeLegs(NamedTuple):
    """Per-trade arrays of shape (m,), in trade order: decision bar ``t``, fill bar ``fb`` and
    exit bar ``eb`` (int64 bar indices), ``side`` (+1/-1, int64) and ``size`` (fraction of
    equity) of the entry decision, ``reason`` (int64 code, index into ``EXIT_REASONS``), the
    raw prices ``raw_in`` / ``raw_out`` and the fills with slippage ``fill_in`` / ``fill_out``
    (an ``END`` exit is marked to the last close, no slippage), and the ``stop`` / ``tp`` price
    levels (NaN: none)."""

    t: np.ndarray
    fb: np.ndarray
    eb: np.ndarray
    side: np.ndarray
    size: np.ndarray
    reason: np.ndarray
    raw_in: np.ndarray
    raw_out: np.ndarray
    fill_in: np.ndarray
    fill_out: np.ndarray
    stop: np.ndarray
    tp: np.ndarray

    @property
    def w(self) -> np.ndarray:
        """Signed size ``side * size``, the fraction of equity held long (+) or short (-)."""
        return self.side * self.size

    @property
    def end(self) -> np.ndarray:
        """True where the trade is still open at the last close (exit reason ``END``)."""
        return self.reason == END

    @property
    def same(self) -> np.ndarray:
        """True where the trade exits inside its fill bar (``eb == fb``)."""
        return self.eb == self.fb


def trade_legs(cols: dict[str, list], s: Signals, slip: float) -> TradeLegs:
    """``walk_trades``' per-trade columns as arrays, with the entry side and size taken from
    the signals at each decision bar and slippage ``slip`` (a fraction, 2 bps = 2e-4) applied
    adversely to both fills."""
    t = np.asarray(cols["t"], dtype=np.int64)
    fb, eb = (np.asarray(cols[k], dtype=np.int64) for k in ("fb", "eb"))
    raw_in, raw_out = (np.asarray(cols[k], dtype=np.float64) for k in ("raw_in", "raw_out"))
    reason = np.asarray(cols["reason"], dtype=np.int64)
    side = s.entry_side[t].astype(np.int64)
    fill_in = raw_in * (1 + side * slip)
    fill_out = np.where(reason == END, raw_out, raw_out * (1 - side * slip))
    stop, tp = (np.asarray(cols[k], dtype=np.float64) for k in ("stop", "tp"))
    size = s.size[t].astype(np.float64)
    return TradeLegs(t, fb, eb, side, size, reason, raw_in, raw_out, fill_in, fill_out, stop, tp)


def held_trade_ids(legs: TradeLegs, n: int) -> np.ndarray:
    """Trade id held at each of the ``n`` closes, shape (n,) int64: ``i + 1`` for
    ``legs[i]``, 0 when flat. Trade ``i`` is held at the closes ``[fb, eb)``, to the end for an
    ``END`` exit."""
    # The ranges are disjoint except that a trade may start where the previous one ends, so an
    # integer cumsum of +id at each start and -id after each end is exact.
    ids = np.arange(1, legs.t.size + 1, dtype=np.float64)
    until = np.where(legs.end, n, legs.eb)
    delta = np.bincount(legs.fb, ids, minlength=n + 1) - np.bincount(until, ids, minlength=n + 1)
    return np.rint(np.cumsum(delta[:n])).astype(np.int64)
