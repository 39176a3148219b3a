"""Runs that have been STARTED for too long: which to alert about, once each.

A run worker that died is failed by Dagster's run monitoring (``defs/run_launcher.py``); a run
that is alive but far past its usual duration (a hung exchange call, a swapping machine, a
worker on another host that nobody can see) is only reported: killing it is a person's call.
The ``stuck_run_alert`` sensor feeds this the STARTED runs and keeps the alerted run ids in its
cursor, so each overdue run is alerted once, and again only if it is started anew.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class StartedRun:
    """A run in status STARTED: ``run_id``, ``job`` name and ``started_s`` (epoch seconds)."""

    run_id: str
    job: str
    started_s: float


@dataclass(frozen=True)
class RunWatch:
    """``alerts``: webhook payloads for runs newly past the limit; ``alerted``: the ids of
    every still-STARTED run already alerted (the sensor's next cursor); ``overdue``: how many
    STARTED runs are past the limit now."""

    alerts: list[dict]
    alerted: list[str]
    overdue: int


def watch_started_runs(
    runs: Iterable[StartedRun], now_s: float, max_run_minutes: float, alerted: Iterable[str]
) -> RunWatch:
    """Alert payloads for the STARTED ``runs`` running longer than ``max_run_minutes`` at
    ``now_s`` (epoch seconds) that are not in ``alerted`` (ids alerted before); ids of runs
    that are no longer STARTED drop out of the returned ``alerted``."""
    if not max_run_minutes > 0:
        raise ValueError(f"max_run_minutes must be > 0, got {max_run_minutes}")
    before = set(alerted)
    payloads, still, overdue = [], [], 0
    for run in sorted(runs, key=lambda r: r.started_s):
        minutes = (now_s - run.started_s) / 60.0
        if minutes <= max_run_minutes:
            continue
        overdue += 1
        still.append(run.run_id)
        if run.run_id in before:
            continue
        message = (
            f"run {run.run_id} of {run.job} has been STARTED for {minutes:.0f} min "
            f"(limit {max_run_minutes:g} min, LEVIBOT_MAX_RUN_MINUTES): check it in the UI; "
            "terminate it there if it hangs"
        )
        payloads.append(
            {
                "run_id": run.run_id,
                "job": run.job,
                "state": "WARN",
                "running_minutes": round(minutes, 1),
                "message": message,
            }
        )
    return RunWatch(payloads, still, overdue)
