"""Event-driven backtest of a policy's per-bar signals, net of fees and slippage.

Time alignment (ARCHITECTURE section 3): bar ``t``'s timestamp is its open time; a decision at
the close of ``t`` fills at ``open(t+1)`` plus slippage; stops and take-profits are checked
inside every held bar, adverse first. The loop runs over trades, not bars: each trade's exit is
found with vectorized searches and the per-bar series are filled with array operations (a
million bars with tens of thousands of trades: about 0.6 s, see ``benchmarks/backtest.py``);
that loop is ``core.trading.trade_loop``, this module validates, costs and assembles the series.
``Signals`` is the interface with ``core.trading.policy``. Statistics live in
``core.trading.performance``; the baselines a policy is judged against and ``compare`` in
``core.trading.baselines``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import check_int_array, require_all
from levibot_pipelines.core.trading.trade_loop import (
    TradeLegs,
    held_trade_ids,
    trade_legs,
    walk_trades,
)


class Action(IntEnum):
    """What the policy does at the close of bar ``t`` (filled at ``open(t+1)``)."""

    HOLD = 0
    ENTRY_LONG = 1
    ENTRY_SHORT = 2
    EXIT = 3


@dataclass(frozen=True)
class Signals:
    """Per-bar instructions decided at the close of bar ``t``; every array has length ``n``.

    - ``entry_side`` int8 in {-1, 0, +1}: when flat, open this side at ``open(t+1)``.
    - ``size`` float64 >= 0: position size as a fraction of equity for an entry at ``t``.
    - ``stop_pct`` float64 > 0, or NaN for no stop: stop distance from the fill price.
    - ``take_profit_pct`` float64 > 0, or NaN for none: take-profit distance from the fill.
    - ``exit_long`` / ``exit_short`` bool: close an open long / short at ``open(t+1)``.
    """

    entry_side: np.ndarray
    size: np.ndarray
    stop_pct: np.ndarray
    take_profit_pct: np.ndarray
    exit_long: np.ndarray
    exit_short: np.ndarray

    def __len__(self) -> int:
        return len(self.entry_side)


FILLS = ("next_open", "close")
EXIT_REASONS = ("signal", "stop", "take_profit", "end")


@dataclass(frozen=True)
class CostModel:
    """Trading costs per side (each entry and each exit is one side).

    ``fee_bps``: fee on the traded notional (the position size, a fraction of equity);
    ``slippage_bps``: adverse move of every fill price (a long entry pays ``open * (1 + slip)``,
    a long exit gets ``price * (1 - slip)``; mirrored for shorts). 1 bp = 1e-4. Neither has a
    default: the pipeline passes ``LEVIBOT_FEE_BPS`` and the symbol's ``LEVIBOT_SLIPPAGE_BPS``.
    """

    fee_bps: float
    slippage_bps: float

    def __post_init__(self) -> None:
        for name in ("fee_bps", "slippage_bps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")

    def scaled(self, k: float) -> CostModel:
        """Both costs multiplied by ``k >= 0`` (``scaled(2)``: the 2x-costs stress test)."""
        if not (math.isfinite(k) and k >= 0):
            raise ValueError(f"cost scale k must be a finite number >= 0, got {k}")
        return CostModel(self.fee_bps * k, self.slippage_bps * k)


@dataclass(frozen=True)
class BacktestConfig:
    """``costs``: the ``CostModel`` (no default, see there). ``fill``: ``"next_open"`` (the
    real rule: a decision at the close of ``t`` fills at ``open(t+1)``) or ``"close"``, a
    LOOK-AHEAD variant filling at ``close(t)``, the price the decision was computed from; it
    exists only so tests can show what look-ahead does.
    ``bars_per_year``: 35040 = 365 * 96 for 15m bars of a 24/7 market."""

    costs: CostModel
    fill: str = "next_open"
    bars_per_year: int = 35040

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if self.bars_per_year <= 0:
            raise ValueError(f"bars_per_year must be > 0, got {self.bars_per_year}")


@dataclass
class BacktestResult:
    """The backtest, per bar (arrays of shape (n,), aligned with ``timestamps``) and per trade.

    - ``returns``: net simple return of equity in bar ``t`` (from close(t-1) to close(t)), float64.
    - ``equity``: ``cumprod(1 + returns)``, from a starting capital of 1.0 (with next-open
      fills nothing happens in the first bar, so ``equity[0] == 1``).
    - ``position``: signed size (fraction of equity, + long, - short) held at the CLOSE of bar
      ``t``: after the fills at open(t) and any stop/take-profit inside bar t, i.e. what the
      decision at the close of ``t`` sees and what is carried into bar t+1.
    - ``action``: int8 ``Action`` decided at the close of ``t`` (a reversal is recorded as the
      entry of the new side; a decision at the last bar is recorded though it cannot fill).
    - ``stop_level`` / ``take_profit_level``: price levels of the position at the close of
      ``t``, NaN when flat.
    - ``trades``: one row per trade (see ``run_backtest``).
    - ``costs_paid``: sum over legs of ``size * (fee + slippage)``, a fraction of equity.
    - ``open_position_at_end``: a position is still held at the last close.
    """

    timestamps: np.ndarray
    returns: np.ndarray
    equity: np.ndarray
    position: np.ndarray
    action: np.ndarray
    stop_level: np.ndarray
    take_profit_level: np.ndarray
    trades: pl.DataFrame
    costs_paid: float
    open_position_at_end: bool


def _check_prices(
    timestamps: object, open_: object, high: object, low: object, close: object
) -> tuple[np.ndarray, ...]:
    ts = check_int_array(timestamps, "timestamps")
    require_all(np.r_[True, np.diff(ts) > 0], "timestamps must be strictly increasing", ts)
    out = []
    for name, x in {"open": open_, "high": high, "low": low, "close": close}.items():
        arr = np.asarray(x, dtype=np.float64)
        if arr.shape != ts.shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected {ts.shape} like timestamps")
        require_all(np.isfinite(arr) & (arr > 0), f"{name} must be finite and > 0", arr)
        out.append(arr)
    o, h, lo, c = out
    require_all(h >= np.maximum(o, c), "high must be >= max(open, close)", h)
    require_all(lo <= np.minimum(o, c), "low must be <= min(open, close)", lo)
    return ts, o, h, lo, c


def _check_signals(s: Signals, n: int) -> None:
    kinds = {"entry_side": "i", "size": "f", "stop_pct": "f", "take_profit_pct": "f"}
    for name in s.__dataclass_fields__:  # type: ignore[attr-defined]
        arr, kind = getattr(s, name), kinds.get(name, "b")
        if not isinstance(arr, np.ndarray) or arr.shape != (n,) or arr.dtype.kind != kind:
            got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr)
            want = {"i": "signed integer", "f": "float", "b": "bool"}[kind]
            raise ValueError(f"signals.{name} must be a {want} array of shape ({n},), got {got}")
    side, size = s.entry_side, s.size
    require_all(np.isin(side, (-1, 0, 1)), "signals.entry_side must be in {-1, 0, 1}", side)
    require_all(~(size < 0), "signals.size must be >= 0", size)
    require_all((side == 0) | np.isfinite(size), "signals.size must be finite at entries", size)
    for name in ("stop_pct", "take_profit_pct"):
        arr = getattr(s, name)
        require_all(~(arr <= 0), f"signals.{name} must be > 0 or NaN (none)", arr)


def run_backtest(
    timestamps: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    signals: Signals,
    cfg: BacktestConfig,
) -> BacktestResult:
    """Trade ``signals`` on the candles, net of fees and slippage, and return per-bar series.

    Inputs have shape (n,): ``timestamps`` bar open times (int ms UTC, strictly increasing),
    prices finite and > 0 with ``low <= min(open, close)`` and ``high >= max(open, close)``.

    Execution (``fill="next_open"``): a decision at the close of ``t`` fills at ``open(t+1)``
    with slippage. From flat, a valid entry (side != 0, size > 0) opens that side; while in a
    position, entries are ignored (no pyramiding or resizing) and the exit flag of the held
    side closes it; an exit plus an entry of the other side at the same ``t`` is a reversal at
    the same open (both legs charged). Stop/take-profit levels are set from the entry fill
    price (``fill * (1 -/+ stop_pct)``) and checked in every bar from the fill bar on, adverse
    first; a bar opening beyond a level fills at its open. A decision at the last bar cannot
    fill, but its action is recorded. A position still open at the end is marked to the last
    close (exit_reason ``"end"``, no exit fee or slippage).

    Per-bar return with ``w = side * size``: entry fill bar ``w * (close/fill - 1) - fee``; held
    bars ``w * (close_j/close_{j-1} - 1)`` (a constant fraction of equity each bar); exit bar
    ``w * (exit_fill/ref - 1) - fee`` with ``ref`` the entry fill in the fill bar, else
    ``close_{j-1}``; ``fee = fee_bps * 1e-4 * size`` per leg. Legs of two trades in one bar
    (a reversal) add up.

    ``trades`` columns: ``entry_ts`` / ``exit_ts`` (open time of the bar the fill happens in),
    ``side`` (+1/-1), ``size``, ``entry_price`` / ``exit_price`` (fills, slippage included),
    ``exit_reason`` in ``EXIT_REASONS``, ``net_return`` (the trade's compounded per-bar
    contributions: its change of equity), ``gross_return`` (the same at raw prices, no fees),
    ``costs`` (``size * (fee + slippage)`` per leg) and ``bars_held`` (bar closes at which the
    position was held: 0 for a stop inside the fill bar).
    """
    ts, o, h, lo, c = _check_prices(timestamps, open_, high, low, close)
    n = ts.size
    _check_signals(signals, n)
    fee_rate, slip = cfg.costs.fee_bps * 1e-4, cfg.costs.slippage_bps * 1e-4
    lag = 1 if cfg.fill == "next_open" else 0
    cols, entry_act, exit_act = walk_trades(o, h, lo, c, signals, lag, slip)
    legs = trade_legs(cols, signals, slip)
    tid = held_trade_ids(legs, n)
    position = np.r_[0.0, legs.w][tid]
    r, net, gross = _returns(c, position, legs, fee_rate)
    costs = legs.size * (fee_rate + slip) * np.where(legs.end, 1, 2)
    return BacktestResult(
        timestamps=ts,
        returns=r,
        equity=np.cumprod(1.0 + r),
        position=position,
        action=_actions(n, signals.entry_side, entry_act, exit_act),
        stop_level=np.r_[np.nan, legs.stop][tid],
        take_profit_level=np.r_[np.nan, legs.tp][tid],
        trades=_trades_frame(ts, legs, gross, costs, net),
        costs_paid=float(costs.sum()),
        open_position_at_end=bool(position[-1] != 0.0),
    )


def _returns(
    c: np.ndarray, position: np.ndarray, legs: TradeLegs, fee_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Net per-bar returns ``r`` (n,) and each trade's ``net`` and ``gross`` returns (m,) (see
    ``run_backtest``) from the closes ``c`` and the signed ``position`` held at each close (n,);
    ``fee_rate``: fee per leg as a fraction of the traded size."""
    n = c.size
    fb, eb, w, end, same = legs.fb, legs.eb, legs.w, legs.end, legs.same
    fee = fee_rate * legs.size
    r = np.zeros(n)
    r[1:] = position[:-1] * (c[1:] / c[:-1] - 1.0)
    r[eb[~same]] = 0.0  # exit bars get their own formula below
    # Held bars between the fill bar and the exit bar compound to exp(inner).
    log_wealth = np.r_[0.0, np.cumsum(np.log1p(r))]
    inner = np.where(same, 0.0, log_wealth[eb] - log_wealth[np.minimum(fb + 1, n)])
    prev_close = c[np.maximum(eb - 1, 0)]
    ref, ref_raw = np.where(same, legs.fill_in, prev_close), np.where(same, legs.raw_in, prev_close)
    fee_out = np.where(end, 0.0, fee) + np.where(same, fee, 0.0)
    entry_c, entry_g = w * (c[fb] / legs.fill_in - 1) - fee, w * (c[fb] / legs.raw_in - 1)
    exit_c = w * (legs.fill_out / ref - 1) - fee_out
    exit_g = w * (legs.raw_out / ref_raw - 1)
    r += np.bincount(fb[~same], entry_c[~same], minlength=n)
    r += np.bincount(eb, exit_c, minlength=n)
    net = np.where(same, exit_c, (1 + entry_c) * np.exp(inner) * (1 + exit_c) - 1)
    gross = np.where(same, exit_g, (1 + entry_g) * np.exp(inner) * (1 + exit_g) - 1)
    return r, net, gross


def _actions(n: int, side: np.ndarray, entries: list[int], exits: list[int]) -> np.ndarray:
    """int8 ``Action`` per bar (n,): HOLD, EXIT at the signal-exit decision bars ``exits``,
    ENTRY_LONG / ENTRY_SHORT (by ``side``, the signals' entry side) at the bars ``entries``."""
    action = np.zeros(n, dtype=np.int8)
    action[np.asarray(exits, dtype=np.int64)] = Action.EXIT
    ent = np.asarray(entries, dtype=np.int64)
    action[ent] = np.where(side[ent] > 0, Action.ENTRY_LONG, Action.ENTRY_SHORT)
    return action


def _trades_frame(
    ts: np.ndarray, legs: TradeLegs, gross: np.ndarray, costs: np.ndarray, net: np.ndarray
) -> pl.DataFrame:
    """One row per trade, the ``trades`` columns of ``run_backtest``."""
    return pl.DataFrame(
        {
            "entry_ts": ts[legs.fb],
            "exit_ts": ts[legs.eb],
            "side": legs.side.astype(np.int8),
            "size": legs.size,
            "entry_price": legs.fill_in,
            "exit_price": legs.fill_out,
            "exit_reason": pl.Series(legs.reason).replace_strict(
                dict(enumerate(EXIT_REASONS)), return_dtype=pl.String
            ),
            "gross_return": gross,
            "costs": costs,
            "net_return": net,
            "bars_held": np.where(legs.end, ts.size - legs.fb, legs.eb - legs.fb),
        }
    )
