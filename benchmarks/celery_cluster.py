"""A Dagster instance on PostgreSQL driving Celery workers, for the cluster tests
(levibot_pipelines_tests/test_cluster_celery.py) and the cluster benchmark
(benchmarks/cluster.py): start a worker (deploy/cluster/worker.sh) and wait until it is ready;
submit runs as the webserver or a sensor does and run the daemon's run queue until they end;
read from the event log which worker ran each step."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psutil

ROOT = Path(__file__).resolve().parents[1]
WORKER_SH = ROOT / "deploy" / "cluster" / "worker.sh"


@dataclass
class Worker:
    queue: str
    proc: subprocess.Popen
    log: Path

    @property
    def name_prefix(self) -> str:
        return f"{self.queue.replace(',', '+')}-{self.proc.pid}@"

    def pids(self) -> set[int]:
        """The worker's own pid and its pool processes' pids (where the steps run)."""
        try:
            parent = psutil.Process(self.proc.pid)
            return {parent.pid, *(c.pid for c in parent.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()


def start_worker(queue: str, log: Path, env: dict[str, str]) -> Worker:
    proc = subprocess.Popen(
        [str(WORKER_SH), queue],
        cwd=ROOT,
        env={**env, "PYTHON": sys.executable},
        stdout=open(log, "ab"),  # noqa: SIM115 - the child holds it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if " ready." in text:
            return Worker(queue, proc, log)
        if proc.poll() is not None:
            raise AssertionError(f"worker {queue} exited {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"worker {queue} not ready in 90 s:\n{log.read_text()[-3000:]}")


class Submitter:
    """Submits runs as the webserver or a sensor does (QUEUED in PostgreSQL), and runs the
    daemon's run queue until they end."""

    def __init__(
        self, instance: dg.DagsterInstance, defs: dg.Definitions, process_context, daemon
    ) -> None:
        self.instance, self.defs = instance, defs
        self.context, self.daemon = process_context, daemon
        self.workspace = process_context.create_request_context()
        location = self.workspace.get_code_location("levibot_pipelines")
        self.repo = location.get_repository("__repository__")

    def submit(self, job: str, partition: str | None = None) -> str:
        remote = self.repo.get_full_job(job)
        tags = {"dagster/partition": partition} if partition else {}
        run = self.instance.create_run_for_job(
            job_def=self.defs.resolve_job_def(job),
            remote_job_origin=remote.get_remote_origin(),
            job_code_origin=remote.get_python_origin(),
            tags=tags,
        )
        return self.instance.submit_run(run.run_id, self.workspace).run_id

    def wait(self, run_ids: list[str], timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        inst = self.instance
        while time.monotonic() < deadline:
            list(self.daemon.run_iteration(self.context))
            runs = [inst.get_run_by_id(r) for r in run_ids]
            if all(r.is_finished for r in runs):
                return {r.run_id: r.status.value for r in runs}
            time.sleep(1.0)
        raise AssertionError(f"runs {run_ids} did not end within {timeout_s:.0f} s")

    def run(self, job: str, partitions: list[str | None], timeout_s: float = 300) -> list[str]:
        ids = [self.submit(job, p) for p in partitions]
        statuses = self.wait(ids, timeout_s)
        failed = {r: s for r, s in statuses.items() if s != "SUCCESS"}
        assert not failed, f"{job}: {failed}\n{run_errors(self.instance, list(failed))}"
        return ids


def run_errors(instance: dg.DagsterInstance, run_ids: list[str]) -> str:
    """The step and run failures of ``run_ids``, one line each (cut at 3,000 characters)."""
    lines = []
    for run_id in run_ids:
        for rec in instance.all_logs(run_id):
            ev = rec.dagster_event
            if ev is not None and ev.event_type_value in ("STEP_FAILURE", "PIPELINE_FAILURE"):
                lines.append(f"{ev.step_key}: {ev.event_specific_data}"[:3000])
    return "\n".join(lines)


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[tuple[str, int]]]:
    """Per step key: the (Celery worker name, pid) of each execution of the step, in order: the
    name from the engine event the worker task logs before it runs the step, the pid from the
    step's STEP_START event (the process that ran it)."""
    names: dict[str, list[str]] = {}
    pids: dict[str, list[int]] = {}
    for rec in instance.all_logs(run_id):
        ev = rec.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            pids.setdefault(ev.step_key, []).append(ev.pid)
        elif ev.event_type_value == "ENGINE_EVENT" and ev.engine_event_data:
            meta = ev.engine_event_data.metadata or {}
            if "Celery worker" in meta:
                names.setdefault(ev.step_key, []).append(meta["Celery worker"].value)
    return {k: list(zip(v, pids.get(k, []), strict=False)) for k, v in names.items()}
