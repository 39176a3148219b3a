"""Kill-switch rules: states, the effective state of a set of entries, and the automatic triggers.

The switch holds ENTRIES keyed by name: one ``manual`` entry set by a person and automatic
triggers (``staleness``, ``drawdown``, ``drift``; other names are allowed). An entry is a mapping
``{"state", "reason", "by", "since"}`` with ``since`` in ms UTC. States are ordered by severity
``ACTIVE < REDUCING < HALTED``; the effective state is the most severe entry (ACTIVE when none).
While not ACTIVE, position sizes are multiplied by :func:`size_multiplier` (1, the reducing
factor, 0). Each trigger is a pure function returning the state to set, or ``None`` to clear.
Persistence lives in ``adapters.killswitch_store``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np

STATES: tuple[str, ...] = ("ACTIVE", "REDUCING", "HALTED")
MANUAL = "manual"


def check_state(state: object) -> str:
    """``state`` when it is one of :data:`STATES`, else ``ValueError`` listing the allowed ones."""
    if state not in STATES:
        raise ValueError(f"kill-switch state {state!r} is not allowed; expected one of {STATES}")
    return str(state)


def severity(state: str) -> int:
    """Severity rank of ``state``: ACTIVE 0, REDUCING 1, HALTED 2."""
    return STATES.index(check_state(state))


def _check_entries(entries: Mapping[str, Mapping]) -> None:
    if not isinstance(entries, Mapping):
        raise ValueError(f"entries must be a mapping name -> entry, got {type(entries).__name__}")
    for name, entry in entries.items():
        if not isinstance(entry, Mapping) or "state" not in entry:
            raise ValueError(f"kill-switch entry {name!r} must be a mapping with a 'state'")
        check_state(entry["state"])


def effective_state(entries: Mapping[str, Mapping]) -> str:
    """The most severe state among ``entries`` (name -> ``{"state", ...}``); ACTIVE when none."""
    _check_entries(entries)
    return max((e["state"] for e in entries.values()), key=severity, default="ACTIVE")


def size_multiplier(state: str, reducing_factor: float) -> float:
    """Factor applied to position sizes: ACTIVE 1.0, REDUCING ``reducing_factor``, HALTED 0.0.

    ``reducing_factor`` must lie in ``[0, 1]`` (settings default 0.5).
    """
    state = check_state(state)
    if not 0.0 <= reducing_factor <= 1.0:
        raise ValueError(f"reducing_factor={reducing_factor!r}: expected a number in [0, 1]")
    return {"ACTIVE": 1.0, "REDUCING": float(reducing_factor), "HALTED": 0.0}[state]


def format_ms(ms: int | None) -> str:
    """``ms`` (UTC epoch milliseconds) as ``"2026-11-24 10:00 UTC"``; ``"?"`` when unknown."""
    if ms is None:
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def describe(entries: Mapping[str, Mapping]) -> str:
    """One human string for every entry that is not ACTIVE, most severe first, manual first
    among equals; ``""`` when there is none.

    The manual entry reads ``"HALTED by alice at 2026-11-24 10:00 UTC: exchange outage"``, a
    trigger ``"drift REDUCING: PSI 0.31 on vol_20 (BTCUSDT)"``; parts are joined by ``"; "``.
    """
    _check_entries(entries)
    live = [(n, e) for n, e in entries.items() if e["state"] != "ACTIVE"]
    live.sort(key=lambda item: (-severity(item[1]["state"]), item[0] != MANUAL, item[0]))
    parts = []
    for name, e in live:
        reason = e.get("reason") or "no reason given"
        if name == MANUAL:
            who = e.get("by") or "?"
            parts.append(f"{e['state']} by {who} at {format_ms(e.get('since'))}: {reason}")
        else:
            parts.append(f"{name} {e['state']}: {reason}")
    return "; ".join(parts)


def staleness_trigger(staleness_minutes: float, limit_minutes: float) -> str | None:
    """HALTED when the data-time staleness exceeds ``limit_minutes`` (no fresh data, no
    trading), else ``None``. ``staleness_minutes`` >= 0 (``inf`` = no data at all);
    ``limit_minutes`` > 0 and finite (settings default 60)."""
    if math.isnan(staleness_minutes) or staleness_minutes < 0:
        raise ValueError(
            f"staleness_minutes={staleness_minutes!r}: expected a number >= 0 (inf = no data)"
        )
    if not (math.isfinite(limit_minutes) and limit_minutes > 0):
        raise ValueError(f"limit_minutes={limit_minutes!r}: expected a finite number > 0")
    return "HALTED" if staleness_minutes > limit_minutes else None


def current_drawdown(equity: object) -> float:
    """Drawdown of the last point from the running peak: ``1 - equity[-1] / max(equity)``.

    ``equity``: 1-D non-empty array of finite, non-negative equity values in time order with a
    positive peak, shape (n,). Returns a fraction in ``[0, 1]`` (0.25 = 25 % below the peak).
    """
    arr = np.asarray(equity, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"equity must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"equity must be finite and >= 0, got min {arr.min()!r}")
    peak = float(arr.max())
    if peak <= 0:
        raise ValueError(f"equity must have a positive peak, got max {peak!r}")
    return float(1.0 - arr[-1] / peak)


def drawdown_trigger(equity: object, max_drawdown: float) -> str | None:
    """HALTED when :func:`current_drawdown` of the paper ``equity`` exceeds ``max_drawdown``
    (a fraction in ``(0, 1]``, settings default 0.2), else ``None``."""
    if not 0.0 < max_drawdown <= 1.0:
        raise ValueError(f"max_drawdown={max_drawdown!r}: expected a fraction in (0, 1]")
    return "HALTED" if current_drawdown(equity) > max_drawdown else None


def drift_trigger(max_psi: float, warn: float, error: float) -> str | None:
    """REDUCING when the largest feature PSI exceeds ``error`` (default 0.25), else ``None``.

    Above ``warn`` (default 0.1) and up to ``error`` the drift check only warns: the switch is
    not touched. Requires ``max_psi >= 0`` and ``0 <= warn <= error``.
    """
    if math.isnan(max_psi) or max_psi < 0:
        raise ValueError(f"max_psi={max_psi!r}: expected a PSI >= 0")
    if not 0.0 <= warn <= error:
        raise ValueError(f"warn={warn!r}, error={error!r}: expected 0 <= warn <= error")
    return "REDUCING" if max_psi > error else None
