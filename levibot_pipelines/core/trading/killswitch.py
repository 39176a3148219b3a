"""Kill-switch rules: states, the effective state of a set of entries, every automatic trigger
and how a state cuts a decision.

The switch holds ENTRIES keyed by name: one ``manual`` entry set by a person and automatic
triggers (``staleness``, ``drawdown``, ``drift``; other names are allowed). An entry is a mapping
``{"state", "reason", "by", "since"}`` with ``since`` in ms UTC. States are ordered by severity
``ACTIVE < REDUCING < HALTED``; the effective state is the most severe entry (ACTIVE when none).
While not ACTIVE, position sizes are multiplied by :func:`size_multiplier` (1, the reducing
factor, 0).

Every automatic trigger is decided by :func:`automatic_triggers` (one rule per trigger:
:func:`staleness_trigger`, :func:`drawdown_trigger`, :func:`drift_trigger`); a state is applied
to a decided entry by :func:`apply_state`. Persistence lives in ``adapters.killswitch_store``;
``usecases.risk`` gathers the inputs and writes the outcome.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from levibot_pipelines.core.data.timeframes import utc_text

STATES: tuple[str, ...] = ("ACTIVE", "REDUCING", "HALTED")
MANUAL = "manual"
ENTRIES: tuple[str, ...] = ("ENTRY_LONG", "ENTRY_SHORT")


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
            since = utc_text(e.get("since"), missing="?")
            parts.append(f"{e['state']} by {who} at {since}: {reason}")
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


def drawdown_trigger(drawdown: float, max_drawdown: float) -> str | None:
    """HALTED when the paper ``drawdown`` (a fraction >= 0 below the running peak:
    ``core.trading.performance.current_drawdown`` of the paper equity) exceeds
    ``max_drawdown`` (a fraction in ``(0, 1]``, settings default 0.2), else ``None``."""
    if not 0.0 < max_drawdown <= 1.0:
        raise ValueError(f"max_drawdown={max_drawdown!r}: expected a fraction in (0, 1]")
    if not (math.isfinite(drawdown) and drawdown >= 0):
        raise ValueError(f"drawdown={drawdown!r}: expected a finite fraction >= 0")
    return "HALTED" if drawdown > max_drawdown else None


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


@dataclass(frozen=True)
class RiskLimits:
    """Limits of the automatic triggers: the settings ``kill_staleness_minutes``,
    ``kill_max_drawdown``, ``psi_warn`` and ``psi_error`` (no defaults here: the settings hold
    the one default of each, see ``usecases.risk.risk_limits``)."""

    staleness_minutes: float
    max_drawdown: float
    psi_warn: float
    psi_error: float


@dataclass(frozen=True)
class PsiReading:
    """One row of a drift report: ``psi`` of ``feature`` on ``symbol``; ``psi_in_training``
    the largest PSI of a same-length window inside the training window (NaN when unknown)."""

    symbol: str
    feature: str
    psi: float
    psi_in_training: float = math.nan


@dataclass(frozen=True)
class RiskInputs:
    """What a caller knows; a trigger whose input is ``None`` is not evaluated (left as stored).

    ``staleness_minutes``: data-time staleness of the newest bar (``inf``: no data at all, which
    clears the trigger: nothing has been traded on yet), named ``staleness_subject`` in the
    reason. ``drawdown``: the worst paper drawdown over symbols (fraction), on
    ``drawdown_symbol``. ``drift_worst``: the largest PSI of the drift report; ``drift_alarm``:
    the row the switch acts on (``core.trading.drift.drift_alarm``), ``None`` when none.
    """

    staleness_minutes: float | None = None
    staleness_subject: str = "newest feature bar"
    drawdown: float | None = None
    drawdown_symbol: str = "?"
    drift_worst: PsiReading | None = None
    drift_alarm: PsiReading | None = None


Triggers = dict[str, tuple[str | None, str]]


def automatic_triggers(inputs: RiskInputs, limits: RiskLimits) -> Triggers:
    """Every automatic trigger that ``inputs`` allow, as name -> (state or ``None`` to clear,
    human reason), in the order staleness, drawdown, drift.

    - ``staleness``: HALTED past ``limits.staleness_minutes`` (:func:`staleness_trigger`),
      cleared when there is no data at all.
    - ``drawdown``: HALTED past ``limits.max_drawdown`` (:func:`drawdown_trigger`).
    - ``drift``: REDUCING when the alarmed PSI exceeds ``limits.psi_error``
      (:func:`drift_trigger`); without an alarm it clears, its reason naming the largest PSI.
    """
    out: Triggers = {}
    minutes = inputs.staleness_minutes
    if minutes is not None:
        limit = limits.staleness_minutes
        state = None if math.isinf(minutes) else staleness_trigger(minutes, limit)
        reason = f"{inputs.staleness_subject} is {minutes:.0f} min stale (limit {limit:.0f})"
        out["staleness"] = (state, reason)
    if inputs.drawdown is not None:
        dd, limit = inputs.drawdown, limits.max_drawdown
        reason = f"paper drawdown {dd:.1%} on {inputs.drawdown_symbol} (limit {limit:.0%})"
        out["drawdown"] = (drawdown_trigger(dd, limit), reason)
    worst, top = inputs.drift_worst, inputs.drift_alarm
    if worst is not None:
        state, reason = None, f"PSI {worst.psi:.3f} on {worst.feature} ({worst.symbol})"
        if top is not None:
            state = drift_trigger(top.psi, limits.psi_warn, limits.psi_error)
            reason = (
                f"PSI {top.psi:.3f} on {top.feature} ({top.symbol}), above every same-length "
                f"window in training ({top.psi_in_training:.3f})"
            )
        out["drift"] = (state, reason)
    return out


@dataclass(frozen=True)
class Applied:
    """A decision after :func:`apply_state`; ``applied`` is True when it was cut."""

    signal: str
    size: float
    position: float
    applied: bool


def apply_state(
    signal: str,
    size: float,
    position: float,
    state: str,
    reducing_factor: float,
    already_applied: str = "ACTIVE",
) -> Applied:
    """Cut a decided entry by the kill-switch ``state`` when it is stricter than
    ``already_applied``, the state the decision was made under (the published one).

    Only entries (``ENTRY_LONG``/``ENTRY_SHORT``) are cut: HALTED turns the entry into ``HOLD``
    with size and position 0 (an entry is only taken from flat); REDUCING multiplies size and
    position by :func:`size_multiplier` (``reducing_factor`` in ``[0, 1]``). Exits and holds
    pass unchanged, as does an entry decided under an equal or stricter state.

    The API cuts published rows with it. The publisher instead passes
    ``size_multiplier(state, reducing_factor)`` into the decision itself
    (``core.trading.paper.live_decision``): there the cut size must be what the paper position
    replays and what later publishes fill, and an entry cut to size 0 is no entry at all for
    the policy (not even its stop and take-profit levels), so cutting after the decision would
    publish different rows.
    """
    multiplier = size_multiplier(state, reducing_factor)
    if signal not in ENTRIES or severity(state) <= severity(already_applied):
        return Applied(signal, size, position, False)
    if state == "HALTED":
        return Applied("HOLD", 0.0, 0.0, True)
    return Applied(signal, size * multiplier, position * multiplier, True)
