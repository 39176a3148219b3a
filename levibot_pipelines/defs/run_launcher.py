"""The instance's run launcher (``dagster.yaml``): Dagster's default launcher plus a run-worker
health check, so that Dagster's run monitoring notices a run whose worker process died.

Why: ``kill -9`` (an OOM kill, a restart, a power loss) of a run worker leaves its run STARTED
forever. A run in the ``duckdb_writer`` pool then holds the pool's only slot, and every later
feature build and publish waits for it for good. The default launcher cannot tell (it has no
health check), so run monitoring skips STARTED runs. This one can: the pid of a run's worker is
in the run's first engine event that carries a ``pid`` ("Started process for run (pid: N)" for
launched runs, "Executing steps in process (pid: N)" for in-process ones), and
``adapters.processes.process_alive`` says whether that process still exists. Run monitoring
then marks a dead worker's run FAILURE, and ``free_slots_after_run_end_seconds`` frees its
pool slots (both configured in ``dagster.yaml``).

A pid means something only on the host that runs the worker. A launched run is judged only
when its code server is on this host (the ``dagster/grpc_info`` tag names a loopback host or a
socket); an in-process run only with ``check_in_process_runs`` (default true: on one host every
run is local; set it false when other hosts execute runs against a shared instance). Anything
that cannot be judged counts as RUNNING: this check never fails a run it cannot see.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._serdes import ConfigurableClassData

from levibot_pipelines.adapters.processes import process_alive

GRPC_INFO_TAG = "dagster/grpc_info"  # set by DefaultRunLauncher on every launched run
LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


class LocalRunLauncher(dg.DefaultRunLauncher):
    """``DefaultRunLauncher`` with ``check_run_worker_health`` for workers on this host."""

    def __init__(
        self, inst_data: ConfigurableClassData | None = None, check_in_process_runs: bool = True
    ) -> None:
        self.check_in_process_runs = check_in_process_runs
        super().__init__(inst_data=inst_data)

    @classmethod
    def config_type(cls) -> dict:
        return {"check_in_process_runs": dg.Field(bool, is_required=False, default_value=True)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> LocalRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """FAILED when the run's worker process on this host is gone, else RUNNING."""
        if not self._is_local(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker not on this host")
        worker = worker_pid(self._instance, run.run_id)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid logged yet")
        pid, logged_at = worker
        if process_alive(pid, logged_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker pid {pid} alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} is gone (killed, out of memory or restarted)",
        )

    def _is_local(self, run: dg.DagsterRun) -> bool:
        raw = run.tags.get(GRPC_INFO_TAG)
        if raw is None:
            return self.check_in_process_runs
        info = json.loads(raw)
        return "socket" in info or info.get("host") in LOOPBACK


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """``(pid, logged_at_s)`` of the run's worker: its first engine event with a ``pid``."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = event.engine_event_data if event else None
        pid = data.metadata.get("pid") if data else None
        if pid is not None:
            return int(getattr(pid, "value", pid)), entry.timestamp
    return None
