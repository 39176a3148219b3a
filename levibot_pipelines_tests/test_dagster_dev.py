"""A real `dagster dev` (webserver + daemon) over a temporary home: the schedule and sensors are
RUNNING by default, and the daemon's sensor rebuilds the features once all symbols have landed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from levibot_pipelines_tests.conftest import SYMBOLS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# dagster dev started in the background may ignore SIGINT/SIGTERM: reset both before exec.
WRAPPER = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture()
def dagster_dev(tmp_path):
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    port = free_port()
    start = (datetime.now(UTC) - timedelta(days=4)).date().isoformat()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIBOT_", "DAGSTER_"))}
    env.update(LEVIBOT_HOME=str(home), LEVIBOT_START=start, DAGSTER_HOME=str(dagster_home))
    # The schedules stay RUNNING but must not tick inside the test: a real ingest tick at :01,
    # :16, ... lands a second ingest of every symbol and, rightly, a second feature rebuild
    # (a CI run at 12:30:43 saw exactly that). Once a year, 1 January 04:04, instead.
    env.update(LEVIBOT_INGEST_CRON="4 4 1 1 *", LEVIBOT_RETRAIN_CRON="4 4 1 1 *")
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    log = (tmp_path / "dagster_dev.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *cmd],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield port, dagster_home, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


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
