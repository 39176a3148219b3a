"""The kill-switch, decided in one place: every automatic trigger is evaluated here (from the
inputs a caller has) and written to the durable switch; a person's engage and release go
through here too.

Callers: the ``feature_freshness_alert`` sensor (data staleness), ``usecases.publish`` (data
staleness, feature drift, paper drawdown) and the ``levibot kill-switch`` command (manual). The
rules are pure (``core.trading.killswitch.automatic_triggers``); the store is
``adapters.killswitch_store.KillSwitch``. Checks and the API never write the switch.
"""

from __future__ import annotations

from levibot_pipelines.adapters.killswitch_store import KillSwitch, KillSwitchStatus
from levibot_pipelines.core.trading.killswitch import RiskInputs, RiskLimits, automatic_triggers
from levibot_pipelines.settings import Settings


def risk_limits(s: Settings) -> RiskLimits:
    """The trigger limits from settings (``kill_staleness_minutes``, ``kill_max_drawdown``,
    ``psi_warn``, ``psi_error``)."""
    return RiskLimits(
        staleness_minutes=s.trading.kill_staleness_minutes,
        max_drawdown=s.trading.kill_max_drawdown,
        psi_warn=s.trading.psi_warn,
        psi_error=s.trading.psi_error,
    )


def evaluate_kill_switch(
    store: KillSwitch,
    inputs: RiskInputs,
    limits: RiskLimits,
    by: str,
    now_ms: int | None = None,
) -> KillSwitchStatus:
    """Evaluate every automatic trigger ``inputs`` allow and write each one to ``store``
    (attributed to ``by``, e.g. ``"auto:publish"``, at ``now_ms``, ms UTC; default the wall
    clock); triggers without an input keep their stored state. Returns the switch after."""
    for name, (state, reason) in automatic_triggers(inputs, limits).items():
        store.set_trigger(name, state, reason, by=by, now_ms=now_ms)
    return store.status()


def engage(store: KillSwitch, state: str, reason: str, by: str) -> KillSwitchStatus:
    """A person engages the manual entry (REDUCING or HALTED), saying why. HALTED is the safe
    direction, so it is written even over a corrupt state file (moved aside, logged and noted
    in the history); REDUCING on a corrupt file raises ``KillSwitchError``, never guessing a
    less safe state."""
    return store.engage(state, reason, by, replace_corrupt=state == "HALTED")


def release(
    store: KillSwitch, by: str, reason: str = "", *, all_entries: bool = False
) -> KillSwitchStatus:
    """A person clears the manual entry; with ``all_entries`` every automatic trigger too.
    Nothing is re-evaluated here: a trigger whose condition still holds re-engages at its next
    evaluation (the freshness sensor's next tick, the next publish)."""
    return store.release(by, reason, all_entries=all_entries)
