"""A real `dagster dev` (webserver + daemon) over a temporary home: the schedule and sensors are
RUNNING by default, and the daemon's sensor rebuilds the features once all symbols have landed."""

import contextlib
import json
import os
import signal
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psutil
import pytest

from benchmarks.dagster_dev import start_dagster_dev, stop
from levibot_pipelines_tests.conftest import SYMBOLS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


STATES = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  schedules { name cronSchedule scheduleState { status } }
  sensors { name sensorState { status } } } } } }"""
RUNS = """{ runsOrError(filter: {pipelineName: "features_job"}) { ... on Runs {
  results { runId status } } } }"""


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except OSError as exc:  # server not up yet
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def dev_environment(tmp_path: Path) -> tuple[Path, dict]:
    """A fresh LEVIBOT_HOME with the project's dagster.yaml, and the environment to run in it."""
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    start = (datetime.now(UTC) - timedelta(days=4)).date().isoformat()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIBOT_", "DAGSTER_"))}
    env.update(LEVIBOT_HOME=str(home), LEVIBOT_START=start, DAGSTER_HOME=str(dagster_home))
    # The schedules stay RUNNING but must not tick inside the test: a real ingest tick at :01,
    # :16, ... lands a second ingest of every symbol and, rightly, a second feature rebuild
    # (a CI run at 12:30:43 saw exactly that). Once a year, 1 January 04:04, instead.
    env.update(LEVIBOT_INGEST_CRON="4 4 1 1 *", LEVIBOT_RETRAIN_CRON="4 4 1 1 *")
    return dagster_home, env


@pytest.fixture()
def dagster_dev(tmp_path):
    dagster_home, env = dev_environment(tmp_path)
    proc, port = start_dagster_dev(env, tmp_path / "dagster_dev.log")
    try:
        yield port, dagster_home, env
    finally:
        stop(proc)


def test_dagster_dev_runs_the_automation(dagster_dev, monkeypatch):
    port, dagster_home, env = dagster_dev
    nodes = wait_for(
        lambda: graphql(port, STATES)["repositoriesOrError"]["nodes"], 120, "the code location"
    )
    states = {s["name"]: s["scheduleState"]["status"] for s in nodes[0]["schedules"]}
    states |= {s["name"]: s["sensorState"]["status"] for s in nodes[0]["sensors"]}
    assert states == {
        "ingest_schedule": "RUNNING",
        "retrain_schedule": "RUNNING",
        "features_after_ingest": "RUNNING",
        "feature_freshness_alert": "RUNNING",
        "publish_on_features": "RUNNING",
        "stuck_run_alert": "RUNNING",
    }
    # The premise of "exactly one rebuild" below: no schedule tick can land in the test.
    assert {s["cronSchedule"] for s in nodes[0]["schedules"]} == {"4 4 1 1 *"}
    # Ingest every symbol into the instance the daemon watches; its sensor must then launch
    # exactly one feature rebuild.
    for key in ("LEVIBOT_HOME", "LEVIBOT_START"):
        monkeypatch.setenv(key, env[key])
    from levibot_pipelines.definitions import load_definitions

    ingest = load_definitions().resolve_job_def("ingest_job")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for symbol in SYMBOLS:
            assert ingest.execute_in_process(partition_key=symbol, instance=instance).success

    def features_run_succeeded():
        runs = graphql(port, RUNS)["runsOrError"]["results"]
        return runs if runs and all(r["status"] == "SUCCESS" for r in runs) else None

    runs = wait_for(features_run_succeeded, 150, "the sensor's features_job run")
    time.sleep(25)  # one more sensor interval: no second rebuild for the same ingest tick
    assert len(graphql(port, RUNS)["runsOrError"]["results"]) == len(runs) == 1
    assert (Path(env["LEVIBOT_HOME"]) / "features" / "cross_asset_features.parquet").exists()


def claimed_by(instance: dg.DagsterInstance, pool: str) -> set[str]:
    info = instance.event_log_storage.get_concurrency_info(pool)
    return {slot.run_id for slot in info.claimed_slots}


def freeze_a_features_run_holding_the_slot(
    instance: dg.DagsterInstance, before: set[str], timeout: float = 150.0
) -> tuple[dg.DagsterRun | None, int | None]:
    """Wait for a features run not in ``before`` (run ids) and stop its worker (SIGSTOP) the
    moment it holds the ``duckdb_writer`` slot, so that it still holds it when the power goes:
    ``(run, worker pid)``; ``(None, None)`` when that run ended first (it is let go on) or none
    came in ``timeout`` seconds."""
    from levibot_pipelines.defs.run_launcher import worker_pid

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claimed = claimed_by(instance, "duckdb_writer")
        runs = instance.get_runs(dg.RunsFilter(job_name="features_job"))
        new = [r for r in runs if r.run_id not in before]
        run = next((r for r in new if r.run_id in claimed), None)
        worker = worker_pid(instance, run.run_id) if run else None
        if worker is not None:
            os.kill(worker[0], signal.SIGSTOP)
            if run.run_id in claimed_by(instance, "duckdb_writer"):
                return run, worker[0]
            os.kill(worker[0], signal.SIGCONT)
            return None, None
        if any(r.is_finished for r in new):
            return None, None
        time.sleep(0.01)
    return None, None


def test_a_power_loss_during_a_run_does_not_freeze_the_warehouse_pool(tmp_path, monkeypatch):
    """dagster dev and a features run holding the only `duckdb_writer` slot are killed with
    SIGKILL (a power loss, an OOM kill of the lot; the run's worker is stopped first, the moment
    it holds the slot, because an in-process rebuild ends within a second): the run is left
    STARTED with its slot claimed. After a restart, run monitoring finds its worker gone (the
    launcher's pid check), marks it FAILURE and frees the slot, and the next rebuild runs."""
    dagster_home, env = dev_environment(tmp_path)
    log = tmp_path / "dagster_dev.log"
    for key in ("LEVIBOT_HOME", "LEVIBOT_START"):
        monkeypatch.setenv(key, env[key])
    from levibot_pipelines.definitions import load_definitions

    ingest = load_definitions().resolve_job_def("ingest_job")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:

        def ingest_all():
            for symbol in SYMBOLS:
                assert ingest.execute_in_process(partition_key=symbol, instance=instance).success

        def features_runs(status=None):
            statuses = [status] if status else None
            return instance.get_runs(dg.RunsFilter(job_name="features_job", statuses=statuses))

        proc, port = start_dagster_dev(env, log)
        try:
            wait_for(lambda: graphql(port, STATES)["repositoriesOrError"]["nodes"], 120, "the UI")
            victim, pid = None, None
            for _ in range(8):  # a rebuild runs in process in about a second: freeze it first
                before = {r.run_id for r in features_runs()}
                ingest_all()
                victim, pid = freeze_a_features_run_holding_the_slot(instance, before)
                if victim is not None:
                    break
            assert victim is not None, f"no features run held the slot: {features_runs()}"
            # The code server and its run workers live in a session of their own: collect
            # them before the process group goes.
            server = psutil.Process(pid).parent()
            doomed = [server, *server.children(recursive=True)]
        finally:
            stop(proc, signal.SIGKILL)
        for p in doomed:  # everything, the code server and the run worker included
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(doomed, timeout=10)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        stuck = instance.get_run_by_id(victim.run_id)
        assert stuck.status == dg.DagsterRunStatus.STARTED
        assert victim.run_id in claimed_by(instance, "duckdb_writer")

        proc, port = start_dagster_dev(env, log)
        try:
            wait_for(lambda: graphql(port, STATES)["repositoriesOrError"]["nodes"], 120, "the UI")
            ingest_all()  # asks for a second rebuild, which needs the slot
            wait_for(
                lambda: features_runs(dg.DagsterRunStatus.SUCCESS),
                240,
                "the second features run to succeed (monitoring polls every 30 s and frees "
                "an ended run's slots after 30 s)",
            )
        finally:
            stop(proc)
        assert instance.get_run_by_id(victim.run_id).status == dg.DagsterRunStatus.FAILURE
        messages = [e.message for e in instance.all_logs(victim.run_id)]
        assert any(f"run worker process {pid} is gone" in m for m in messages), messages[-5:]
        assert victim.run_id not in claimed_by(instance, "duckdb_writer")
