"""A dead run worker is detected and its run failed; a live but overdue run is alerted once.

The pid checks use real processes (a ``sleep`` child killed with SIGKILL), the launcher a real
instance built from the project's ``dagster.yaml``; the whole recovery under a real ``dagster
dev`` is in ``test_dagster_dev.py``."""

import json
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.launcher import WorkerStatus

from levibot_pipelines.adapters.processes import process_alive
from levibot_pipelines.defs.resources import AlertResource, MarketDataResource
from levibot_pipelines.defs.run_launcher import LocalRunLauncher
from levibot_pipelines.defs.run_watch import stuck_run_alert
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.run_watch import StartedRun, watch_started_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_live_process_is_alive_and_a_killed_one_is_not(sleeper):
    assert process_alive(sleeper.pid, time.time())
    os.kill(sleeper.pid, signal.SIGKILL)
    time.sleep(0.2)  # not reaped yet: a zombie is dead too
    assert not process_alive(sleeper.pid, time.time())
    sleeper.wait()
    assert not process_alive(sleeper.pid, time.time())


def test_a_reused_pid_is_not_the_logged_process(sleeper):
    # The pid was logged an hour before this process started: another process had it then.
    assert not process_alive(sleeper.pid, time.time() - 3600)


def test_a_bad_pid_is_refused():
    with pytest.raises(ValueError, match="pid must be a positive integer, got 0"):
        process_alive(0, time.time())


@pytest.fixture()
def instance(tmp_path):
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        yield inst


def started_run(instance, tags=None, pid=None, started=None) -> dg.DagsterRun:
    run = instance.add_run(
        dg.DagsterRun(job_name="features_job", status=dg.DagsterRunStatus.STARTED, tags=tags or {})
    )
    start = DagsterEvent(DagsterEventType.RUN_START.value, job_name="features_job")
    instance.handle_run_event(run.run_id, start, update_timestamp=started)
    if pid is not None:
        message = f"Started process for run (pid: {pid})."
        instance.report_engine_event(message, run, EngineEventData.in_process(pid))
    return run


def test_the_project_instance_uses_the_checking_launcher_with_run_monitoring(instance):
    assert isinstance(instance.run_launcher, LocalRunLauncher)
    assert instance.run_launcher.supports_check_run_worker_health
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
    assert "MONITORING" in instance.get_required_daemon_types()


LOCAL = {"dagster/grpc_info": json.dumps({"host": "localhost", "port": 4000})}
SOCKET = {"dagster/grpc_info": json.dumps({"host": "localhost", "socket": "/tmp/s"})}
REMOTE = {"dagster/grpc_info": json.dumps({"host": "code-server", "port": 4000})}


@pytest.mark.parametrize(
    ("tags", "alive", "logged", "expected"),
    [
        (LOCAL, True, True, WorkerStatus.RUNNING),
        (LOCAL, False, True, WorkerStatus.FAILED),
        (SOCKET, False, True, WorkerStatus.FAILED),
        ({}, False, True, WorkerStatus.FAILED),  # in-process run, judged on one host
        (REMOTE, False, True, WorkerStatus.RUNNING),  # another host's pid means nothing here
        (LOCAL, False, False, WorkerStatus.RUNNING),  # no pid logged yet: cannot judge
    ],
)
def test_worker_health(instance, sleeper, tags, alive, logged, expected):
    if not alive:
        sleeper.kill()
        sleeper.wait()
    run = started_run(instance, tags, sleeper.pid if logged else None)
    result = instance.run_launcher.check_run_worker_health(run)
    assert result.status == expected, result.msg
    if expected == WorkerStatus.FAILED:
        assert f"run worker process {sleeper.pid} is gone" in result.msg


def test_in_process_runs_are_not_judged_when_other_hosts_execute_runs(instance, sleeper):
    sleeper.kill()
    sleeper.wait()
    launcher = LocalRunLauncher(check_in_process_runs=False)
    launcher.register_instance(instance)
    run = started_run(instance, {}, sleeper.pid)
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_watch_alerts_each_overdue_run_once():
    now = 10_000.0
    runs = [
        StartedRun("a", "features_job", now - 121 * 60),  # 121 min: past a 120 min limit
        StartedRun("b", "publish_job", now - 119 * 60),  # 119 min: not yet
        StartedRun("c", "ingest_job", now - 300 * 60),  # alerted before
    ]
    watch = watch_started_runs(runs, now, 120, alerted=["c", "gone"])
    assert [p["run_id"] for p in watch.alerts] == ["a"]
    assert watch.alerts[0]["running_minutes"] == 121.0
    assert "features_job has been STARTED for 121 min (limit 120 min" in watch.alerts[0]["message"]
    assert watch.alerted == ["c", "a"]  # oldest first; "gone" is no longer STARTED
    assert watch.overdue == 2
    again = watch_started_runs(runs, now, 120, alerted=watch.alerted)
    assert again.alerts == [] and again.overdue == 2
    with pytest.raises(ValueError, match="max_run_minutes must be > 0, got 0"):
        watch_started_runs(runs, now, 0, [])


def test_the_sensor_alerts_a_run_started_three_hours_ago_once(instance, tmp_path, caplog):
    three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
    old = started_run(instance, LOCAL, started=three_hours_ago)
    started_run(instance, LOCAL)  # started now: not overdue
    resources = {"market": MarketDataResource(Settings(home=tmp_path)), "alerts": AlertResource()}
    context = dg.build_sensor_context(instance=instance, resources=resources)
    with caplog.at_level("WARNING"):
        result = stuck_run_alert(context)
    assert "2 run(s) STARTED, 1 past 120 min, 1 newly alerted" in result.skip_message
    assert f"run {old.run_id} of features_job has been STARTED for 180 min" in caplog.text
    cursor = json.loads(context.cursor)
    assert cursor == {"alerted": [old.run_id]}
    context = dg.build_sensor_context(
        instance=instance, resources=resources, cursor=json.dumps(cursor)
    )
    assert "0 newly alerted" in stuck_run_alert(context).skip_message
