"""The cluster profile's execution: the Dagster instance on PostgreSQL, the run queue of the
daemon, a code server on a TCP port and two Celery workers (deploy/cluster/worker.sh), one on
queue ``cpu`` and one on queue ``gpu``, with Redis as broker and result backend, all real and on
loopback (``make test-cluster``).

A whole cycle runs through them: ingest every symbol, build the features, train every symbol,
publish. The test reads back from PostgreSQL that every step ran in a worker process (the
worker's name and pid in the event log, never the run's own process), that the Transformer
training steps ran on the ``gpu`` worker and the rest on ``cpu``, and that the published
predictions cover every symbol. Then the faults: a worker killed in the middle of a training
step (the step runs again on the other worker and the run succeeds), and Redis stopped during a
run (the run fails with the broker's error, within a bounded time, instead of hanging).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._grpc.server import GrpcServerProcess

from benchmarks.celery_cluster import Submitter, Worker, run_errors, start_worker, step_workers
from deploy.cluster.stack import start_redis, stop_pid
from levibot_pipelines.adapters.prediction_files import read_latest
from levibot_pipelines_tests.cluster_fixtures import postgres_server, redis_server  # noqa: F401
from levibot_pipelines_tests.conftest import (
    SESSION_ENV,
    SYMBOLS,
    levibot_environment,
    recent_start,
)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "deploy" / "cluster" / "dagster.yaml"
GPU_STEPS = {"deep_tfm_model", "model_report"}


@dataclass
class Cluster:
    home: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    env: dict[str, str]
    logs: Path


@pytest.fixture(scope="module")
def cluster(postgres_server, redis_server, tmp_path_factory) -> Iterator[Cluster]:  # noqa: F811
    """The environment of every host: LEVIBOT_PG_*, the Celery URLs, LEVIBOT_EXECUTOR=celery,
    a fresh LEVIBOT_HOME with DAGSTER_HOME holding deploy/cluster/dagster.yaml."""
    home = tmp_path_factory.mktemp("levibot_cluster")
    dagster_home = home / "dagster"
    dagster_home.mkdir()
    shutil.copy(CLUSTER_YAML, dagster_home / "dagster.yaml")
    values = {
        **SESSION_ENV,
        "LEVIBOT_HOME": str(home),
        "LEVIBOT_START": recent_start(20),
        "LEVIBOT_EXECUTOR": "celery",
        **redis_server.env(),
        **postgres_server.env(),
    }
    logs = tmp_path_factory.mktemp("logs")
    with levibot_environment(values), pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(dagster_home))
        from levibot_pipelines.definitions import load_definitions

        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            yield Cluster(home, instance, load_definitions(), dict(os.environ), logs)


@pytest.fixture(scope="module")
def workers(cluster) -> Iterator[dict[str, Worker]]:
    started = {
        q: start_worker(q, cluster.logs / f"worker-{q}.log", cluster.env) for q in ("cpu", "gpu")
    }
    yield started
    for w in started.values():
        stop_pid(w.proc.pid)


@pytest.fixture(scope="module")
def submitter(cluster, workers) -> Iterator[Submitter]:
    code = LoadableTargetOrigin(
        executable_path=sys.executable,
        module_name="levibot_pipelines.definitions",
        working_directory=str(ROOT),
    )
    inst = cluster.instance
    server = GrpcServerProcess(
        inst.get_ref(), loadable_target_origin=code, force_port=True, wait_on_exit=True
    )
    target = GrpcServerTarget("localhost", server.port, None, "levibot_pipelines")
    with (
        server,
        WorkspaceProcessContext(inst, target) as process_context,
        QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon,
    ):
        yield Submitter(inst, cluster.defs, process_context, daemon)


def test_a_whole_cycle_runs_on_the_celery_workers(cluster, workers, submitter, postgres_server):  # noqa: F811
    runs = {
        "ingest_job": submitter.run("ingest_job", list(SYMBOLS)),
        "features_job": submitter.run("features_job", [None]),
        "training_job": submitter.run("training_job", list(SYMBOLS), timeout_s=900),
        "publish_job": submitter.run("publish_job", [None]),
    }
    worker_pids = {q: w.pids() for q, w in workers.items()}
    launcher_pids = set()
    for job, ids in runs.items():
        for run_id in ids:
            seen = step_workers(cluster.instance, run_id)
            plan = cluster.instance.get_run_by_id(run_id)
            assert set(seen) == set(plan.step_keys_to_execute or seen), (job, seen)
            for step, executions in seen.items():
                queue = "gpu" if step in GPU_STEPS else "cpu"
                for name, pid in executions:
                    assert name.startswith(workers[queue].name_prefix), (job, step, name)
                    assert pid in worker_pids[queue], (job, step, pid, worker_pids)
            launcher_pids |= {  # the run's process: it submits the tasks
                rec.dagster_event.pid
                for rec in cluster.instance.all_logs(run_id)
                if rec.dagster_event and rec.user_message.startswith("Submitting celery task")
            }
    # The runs' own processes (launched by the code server) ran no step.
    assert launcher_pids and not launcher_pids & (worker_pids["cpu"] | worker_pids["gpu"])
    trained = step_workers(cluster.instance, runs["training_job"][0])
    on_gpu = {step for step, runs_of in trained.items() if runs_of[0][0].startswith("gpu-")}
    assert on_gpu == GPU_STEPS  # the Transformer training; LightGBM, ensemble, checks on cpu
    assert {"lgbm_model", "ensemble_weights", "lgbm_model_predictions_valid"} <= set(trained)
    # Runs and events are rows of PostgreSQL.
    conn = postgres_server.connect()
    try:
        with conn.cursor() as cur:
            all_ids = [r for ids in runs.values() for r in ids]
            cur.execute("SELECT count(*) FROM runs WHERE run_id = ANY(%s)", (all_ids,))
            assert cur.fetchone()[0] == len(all_ids) == 3 + 1 + 3 + 1
            cur.execute(
                "SELECT count(*) FROM event_logs WHERE run_id = ANY(%s) "
                "AND dagster_event_type = 'STEP_SUCCESS'",
                (all_ids,),
            )
            executed = sum(len(step_workers(cluster.instance, r)) for r in all_ids)
            assert cur.fetchone()[0] == executed > 3 + 1 + 3 * 4 + 4  # assets and their checks
    finally:
        conn.close()
    latest = read_latest(cluster.home)  # LEVIBOT_DATA_URL unset: the files are in the home
    assert latest is not None and sorted(latest.rows) == sorted(SYMBOLS)


def have_features(submitter: Submitter) -> None:
    """Ingest and build the features once in the module (the first test does it too)."""
    if not any(submitter.instance.get_run_records(dg.RunsFilter(job_name="features_job"))):
        submitter.run("ingest_job", list(SYMBOLS))
        submitter.run("features_job", [None])


def _running_step(instance: dg.DagsterInstance, run_id: str, step: str, timeout_s: float):
    """(worker name, pid) of the worker process once ``step`` has started in it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = step_workers(instance, run_id).get(step)
        if seen:
            return seen[-1]
        time.sleep(0.2)
    raise AssertionError(f"{step} did not start within {timeout_s} s")


# The deep step must outlast the kill: with the session's one epoch and 5 MC samples it ends in
# under a second, before the SIGKILL. Only the two gpu workers of the kill test get these (a
# step's settings are those of the worker that runs it); the shapes of what it writes are not
# changed by them.
SLOW_DEEP_STEP = {"LEVIBOT_EPOCHS": "40", "LEVIBOT_MC_SAMPLES": "300"}


def test_a_worker_killed_mid_step_hands_the_step_to_the_other_worker(cluster, workers, submitter):
    """Two ``gpu`` workers; the deep training step starts on one of the two, and that worker is
    killed: its pool process with SIGKILL (as the OOM killer does) while the worker is shutting
    down. The message, acknowledged only at the end of a task, goes back to the queue; the other
    worker runs the step and the run succeeds, with the model registered."""
    have_features(submitter)
    slow = {**cluster.env, **SLOW_DEEP_STEP}
    stop_pid(workers["gpu"].proc.pid)
    pair = [start_worker("gpu", cluster.logs / f"worker-gpu-slow-{i}.log", slow) for i in (1, 2)]
    try:
        run_id = submitter.submit("training_job", SYMBOLS[0])
        list(submitter.daemon.run_iteration(submitter.context))
        name, pid = _running_step(cluster.instance, run_id, "deep_tfm_model", 240)
        victim = next(w for w in pair if name.startswith(w.name_prefix))
        other = pair[1] if victim is pair[0] else pair[0]
        assert pid in victim.pids() and pid != victim.proc.pid
        os.kill(victim.proc.pid, signal.SIGTERM)  # warm shutdown: take no new task
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)  # the process running the step dies
        statuses = submitter.wait([run_id], 600)
        assert statuses == {run_id: "SUCCESS"}, run_errors(cluster.instance, [run_id])
        executions = step_workers(cluster.instance, run_id)["deep_tfm_model"]
        assert executions[0] == (name, pid)
        assert executions[-1][0].startswith(other.name_prefix)
        assert len(executions) == 2
    finally:
        for w in pair:
            stop_pid(w.proc.pid)
        workers["gpu"] = start_worker("gpu", cluster.logs / "worker-gpu-3.log", cluster.env)


def test_redis_stopped_during_a_run_ends_the_run_within_a_bound(
    cluster,
    workers,
    submitter,
    redis_server,  # noqa: F811
):
    """Redis (broker and result backend) stops for 15 s while a training step runs on a worker,
    then comes back empty on the same port (no persistence). The run does not hang: the
    executor's next poll of the result backend fails, and the run ends FAILURE with Redis's
    connection error, naming its address (measured: within seconds of the stop). A run
    submitted afterwards succeeds on the same workers (they reconnect)."""
    have_features(submitter)
    run_id = submitter.submit("training_job", SYMBOLS[1])
    list(submitter.daemon.run_iteration(submitter.context))
    _running_step(cluster.instance, run_id, "lgbm_model", 240)
    stop_pid(redis_server.pid)
    stopped = time.monotonic()
    time.sleep(15)
    back = start_redis(Path(redis_server.root), port=redis_server.port)
    try:
        status = submitter.wait([run_id], 420)[run_id]
        errors = run_errors(cluster.instance, [run_id])
        print(f"run {status} {time.monotonic() - stopped:.0f} s after Redis stopped:\n{errors}")
        # What the user sees: a failed run with the broker's error, naming its address (never
        # a run left STARTED: wait() raises at its 420 s deadline).
        assert status == "FAILURE", (status, errors)
        assert f"Error 111 connecting to 127.0.0.1:{redis_server.port}" in errors
        again = submitter.run("ingest_job", [SYMBOLS[2]])
        assert step_workers(cluster.instance, again[0])["ohlcv"][0][0].startswith("cpu-")
    finally:
        back.stop()
