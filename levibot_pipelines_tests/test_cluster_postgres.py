"""The cluster profile's Dagster instance (deploy/cluster/dagster.yaml) on a real PostgreSQL.

The first test (part of ``make test``) checks that the cluster file is the laptop's
``dagster.yaml`` plus PostgreSQL storage, the run queue's tag limits and in-process runs left
unjudged. The ``cluster`` tests (``make test-cluster``) build the instance from the file against
a throwaway server on loopback (``cluster_fixtures.postgres_server``), run the ingest and feature
jobs through it, and read the runs, events, pool slots and run queue back with SQL.
"""

import copy
import shutil
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._grpc.server import GrpcServerProcess
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from levibot_pipelines.defs.run_launcher import LocalRunLauncher
from levibot_pipelines_tests.cluster_fixtures import postgres_server  # noqa: F401 (fixture)
from levibot_pipelines_tests.conftest import SYMBOLS

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "deploy" / "cluster" / "dagster.yaml"
QUEUE_LIMITS = [
    {"key": "levibot/queue", "value": "gpu", "limit": 1},
    {"key": "levibot/queue", "value": "cpu", "limit": 2},
]


def test_the_cluster_instance_is_the_laptop_one_on_postgres_with_queue_limits():
    laptop = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    cluster = yaml.safe_load(CLUSTER_YAML.read_text())
    assert cluster["storage"] == {
        "postgres": {
            "postgres_db": {
                "scheme": "postgresql+psycopg2",
                **{
                    field: {"env": f"LEVIBOT_PG_{name}"}
                    for field, name in [
                        ("username", "USER"),
                        ("password", "PASSWORD"),
                        ("hostname", "HOST"),
                        ("db_name", "DB"),
                        ("port", "PORT"),
                    ]
                },
            }
        }
    }
    assert cluster["concurrency"]["runs"]["tag_concurrency_limits"] == QUEUE_LIMITS
    assert cluster["run_launcher"]["config"] == {"check_in_process_runs": False}
    rest = copy.deepcopy(cluster)
    del rest["storage"], rest["concurrency"]["runs"]["tag_concurrency_limits"]
    rest["run_launcher"]["config"]["check_in_process_runs"] = True
    assert rest == laptop


@pytest.fixture(scope="module")
def cluster_home(env, postgres_server, tmp_path_factory):  # noqa: F811
    """A DAGSTER_HOME holding deploy/cluster/dagster.yaml, with LEVIBOT_PG_* naming the server."""
    home = tmp_path_factory.mktemp("dagster_cluster")
    shutil.copy(CLUSTER_YAML, home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in postgres_server.env().items():
            mp.setenv(key, value)
        mp.setenv("DAGSTER_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def cluster_instance(cluster_home):
    with dg.DagsterInstance.from_config(str(cluster_home)) as instance:
        yield instance


@pytest.fixture(scope="module")
def sql(postgres_server):  # noqa: F811
    """``sql(query, params)`` -> all rows, on the instance's database."""
    conn = postgres_server.connect()

    def query(text: str, params: tuple = ()) -> list[tuple]:
        with conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall()

    yield query
    conn.close()


@pytest.mark.cluster
def test_the_instance_is_built_on_postgres_with_the_run_queue(cluster_instance):
    inst = cluster_instance
    assert isinstance(inst.run_storage, PostgresRunStorage)
    assert isinstance(inst.event_log_storage, PostgresEventLogStorage)
    assert isinstance(inst.schedule_storage, PostgresScheduleStorage)
    assert isinstance(inst.run_coordinator, QueuedRunCoordinator)
    queue = inst.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 4
    assert queue.tag_concurrency_limits == QUEUE_LIMITS
    assert isinstance(inst.run_launcher, LocalRunLauncher)
    assert inst.run_launcher.check_in_process_runs is False


@pytest.mark.cluster
def test_runs_events_and_pool_slots_are_in_postgres(defs, cluster_instance, cluster_home, sql):
    ingest, features = defs.resolve_job_def("ingest_job"), defs.resolve_job_def("features_job")
    runs = {}
    for symbol in SYMBOLS:
        result = ingest.execute_in_process(partition_key=symbol, instance=cluster_instance)
        assert result.success
        runs[result.run_id] = ("ingest_job", symbol)
    result = features.execute_in_process(instance=cluster_instance)
    assert result.success
    runs[result.run_id] = ("features_job", None)

    ids = list(runs)
    stored = sql("SELECT run_id, pipeline_name, status FROM runs WHERE run_id = ANY(%s)", (ids,))
    assert {r[0]: (r[1], r[2]) for r in stored} == {
        run_id: (job, "SUCCESS") for run_id, (job, _) in runs.items()
    }
    materialized = sql(
        "SELECT run_id, asset_key, partition FROM event_logs "
        "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND run_id = ANY(%s)",
        (ids,),
    )
    assert sorted((runs[r][0], key, part) for r, key, part in materialized) == [
        ("features_job", '["cross_asset_features"]', None),
        *[("ingest_job", '["ohlcv"]', symbol) for symbol in sorted(SYMBOLS)],
    ]
    # The DuckDB writer pool: one slot, shared by every host through the database.
    assert sql(
        'SELECT "limit" FROM concurrency_limits WHERE concurrency_key = %s', ("duckdb_writer",)
    ) == [(1,)]
    assert sql(
        "SELECT count(*) FROM concurrency_slots WHERE concurrency_key = %s", ("duckdb_writer",)
    ) == [(1,)]
    # Nothing went to the laptop's SQLite files.
    assert list(cluster_home.rglob("*.db")) == []


def wait_for_end(instance: dg.DagsterInstance, run_id: str, timeout_s: float = 60.0) -> str:
    """The run's final status name, polled from the instance."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run.status.value
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not end within {timeout_s} s")


@pytest.mark.cluster
def test_the_queue_starts_one_gpu_run_at_a_time(defs, cluster_instance, sql):
    """Two ingest runs tagged ``levibot/queue: gpu`` and one tagged ``cpu`` are submitted (as the
    webserver or a sensor does). One pass of the daemon's run queue launches the first gpu run and
    the cpu run, and holds the second gpu run until the first has ended."""
    inst = cluster_instance
    code = LoadableTargetOrigin(
        executable_path=sys.executable,
        module_name="levibot_pipelines.definitions",
        working_directory=str(ROOT),
    )
    # A code server on a TCP port, as on another host; stopped and waited for at the end.
    server = GrpcServerProcess(
        inst.get_ref(), loadable_target_origin=code, force_port=True, wait_on_exit=True
    )
    target = GrpcServerTarget("localhost", server.port, None, "levibot_pipelines")
    queues = {"BTCUSDT": "gpu", "ETHUSDT": "gpu", "SOLUSDT": "cpu"}
    with (
        server,
        WorkspaceProcessContext(inst, target) as process_context,
        QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon,
    ):
        workspace = process_context.create_request_context()
        location = workspace.get_code_location("levibot_pipelines")
        remote = location.get_repository("__repository__").get_full_job("ingest_job")
        ids = {}
        for symbol, queue in queues.items():
            run = inst.create_run_for_job(
                job_def=defs.resolve_job_def("ingest_job"),
                remote_job_origin=remote.get_remote_origin(),
                job_code_origin=remote.get_python_origin(),
                tags={"dagster/partition": symbol, "levibot/queue": queue},
            )
            ids[symbol] = inst.submit_run(run.run_id, workspace).run_id
        status = "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)"
        assert dict(sql(status, (list(ids.values()),))) == dict.fromkeys(ids.values(), "QUEUED")

        list(daemon.run_iteration(process_context))
        queued = {
            s for s, run_id in ids.items() if inst.get_run_by_id(run_id).status.value == "QUEUED"
        }
        assert queued == {"ETHUSDT"}  # the second gpu run waits; the cpu run does not
        assert wait_for_end(inst, ids["BTCUSDT"]) == "SUCCESS"
        list(daemon.run_iteration(process_context))
        assert [wait_for_end(inst, ids[s]) for s in ("ETHUSDT", "SOLUSDT")] == ["SUCCESS"] * 2
    assert dict(sql(status, (list(ids.values()),))) == dict.fromkeys(ids.values(), "SUCCESS")
    tags = sql(
        "SELECT run_id, value FROM run_tags WHERE key = 'levibot/queue' AND run_id = ANY(%s)",
        (list(ids.values()),),
    )
    assert dict(tags) == {ids[s]: queue for s, queue in queues.items()}
