"""Training three symbols on the cluster profile with one Celery worker and with two.

For each worker count: a fresh PostgreSQL and Redis on loopback (deploy/cluster/stack.py), the
instance of deploy/cluster/dagster.yaml, a code server, the daemon's run queue, and N workers
listening on both queues (``worker.sh cpu,gpu``), with the ``training`` pool given N slots (as
deploy/cluster/README.md says for a cluster). Ingest and features run first, untimed; then the
three ``training_job`` runs (one per symbol) are submitted together and timed from submission
to the last run's end. The ratio of the two walls is the speed-up of the second worker; on this
machine both workers share its cores, so the ratio says what the executor adds or costs, and a
second host would add its own cores.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.celery_cluster import Submitter, start_worker

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MODEL_ENV = {  # a small model, so that one measurement takes minutes on 2 cores
    "LEVIBOT_SOURCE": "synthetic",
    "LEVIBOT_PROFILE": "small",
    "LEVIBOT_WALK": "1000,250,250,300",
    "LEVIBOT_PURGE": "40",
    "LEVIBOT_EPOCHS": "2",
    "LEVIBOT_MC_SAMPLES": "10",
    "LEVIBOT_REPORT_FOLDS": "1",
}


@contextmanager
def cluster(root: Path, n_workers: int, symbols: tuple[str, ...] = SYMBOLS) -> Iterator[Submitter]:
    """PostgreSQL, Redis, ``n_workers`` workers on both queues (the ``training`` pool with as
    many slots), a code server and the daemon's run queue, for ``symbols``; everything stopped
    and the process environment restored at the end."""
    import dagster as dg
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import GrpcServerTarget
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
        QueuedRunCoordinatorDaemon,
    )
    from dagster._grpc.server import GrpcServerProcess

    from deploy.cluster.stack import start_postgres, start_redis, stop_pid

    pg_root = Path(tempfile.mkdtemp(prefix="levibot-pg-", dir="/tmp"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, pg_root, True)
        pg = start_postgres(pg_root)
        stack.callback(pg.stop)
        redis = start_redis(root / "redis")
        stack.callback(redis.stop)
        home = root / "home"
        (home / "dagster").mkdir(parents=True)
        shutil.copy(ROOT / "deploy" / "cluster" / "dagster.yaml", home / "dagster" / "dagster.yaml")
        start = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LEVIBOT_")},
            **MODEL_ENV,
            "LEVIBOT_SYMBOLS": ",".join(symbols),
            "LEVIBOT_HOME": str(home),
            "LEVIBOT_START": start,
            "LEVIBOT_EXECUTOR": "celery",
            "DAGSTER_HOME": str(home / "dagster"),
            **pg.env(),
            **redis.env(),
        }
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        stack.callback(lambda: (os.environ.clear(), os.environ.update(saved)))
        from levibot_pipelines.definitions import load_definitions

        defs = load_definitions()
        inst = stack.enter_context(dg.DagsterInstance.from_config(str(home / "dagster")))
        inst.event_log_storage.set_concurrency_slots("training", n_workers)
        for i in range(n_workers):
            w = start_worker("cpu,gpu", root / f"worker-{i}.log", env)
            stack.callback(stop_pid, w.proc.pid)
        code = LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name="levibot_pipelines.definitions",
            working_directory=str(ROOT),
        )
        server = stack.enter_context(
            GrpcServerProcess(
                inst.get_ref(), loadable_target_origin=code, force_port=True, wait_on_exit=True
            )
        )
        target = GrpcServerTarget("localhost", server.port, None, "levibot_pipelines")
        context = stack.enter_context(WorkspaceProcessContext(inst, target))
        daemon = stack.enter_context(QueuedRunCoordinatorDaemon(interval_seconds=1))
        yield Submitter(inst, defs, context, daemon)


def _timed(fn) -> tuple[float, object]:
    t0 = time.monotonic()
    out = fn()
    return round(time.monotonic() - t0, 1), out


def _step_seconds(sub: Submitter, run_ids: list[str]) -> dict[str, list[float]]:
    steps: dict[str, list[float]] = {}
    for run_id in run_ids:
        for rec in sub.instance.all_logs(run_id):
            ev = rec.dagster_event
            if ev is not None and ev.event_type_value == "STEP_SUCCESS":
                seconds = round(ev.event_specific_data.duration_ms / 1000, 1)
                steps.setdefault(ev.step_key, []).append(seconds)
    return steps


def _measure(n_workers: int, root: Path) -> dict:
    with cluster(root, n_workers) as sub:
        sub.run("ingest_job", list(SYMBOLS))
        sub.run("features_job", [None])
        wall, ids = _timed(lambda: sub.run("training_job", list(SYMBOLS), timeout_s=3600))
        return {"workers": n_workers, "wall_s": wall, "step_s": _step_seconds(sub, ids)}


def bench_celery_training(worker_counts: tuple[int, ...] = (1, 2)) -> dict:
    """Wall time of training three symbols with each worker count, and the ratio."""
    runs = []
    for n in worker_counts:
        with tempfile.TemporaryDirectory(prefix="levibot-bench-cluster-") as tmp:
            runs.append(_measure(n, Path(tmp)))
    walls = {r["workers"]: r["wall_s"] for r in runs}
    return {
        "runs": runs,
        "speedup_2_vs_1": round(walls[1] / walls[2], 2) if {1, 2} <= set(walls) else None,
        "cores": os.cpu_count(),
        "model_env": MODEL_ENV,
        "note": "all workers on this one machine: they share its cores",
    }


def universe(n: int) -> tuple[str, ...]:
    """BTCUSDT, ETHUSDT, SOLUSDT (the features need them) and ``n - 3`` synthetic symbols."""
    return SYMBOLS + tuple(f"SYN{i:02d}USDT" for i in range(1, n - 2))


def _cycle(n_symbols: int, root: Path, n_workers: int) -> dict:
    symbols = universe(n_symbols)
    with cluster(root, n_workers, symbols) as sub:
        ingest, _ = _timed(lambda: sub.run("ingest_job", list(symbols), timeout_s=3600))
        features, _ = _timed(lambda: sub.run("features_job", [None]))
        train, _ = _timed(lambda: sub.run("training_job", list(symbols), timeout_s=7200))
        publish, _ = _timed(lambda: sub.run("publish_job", [None]))

        def tick() -> list[str]:  # what the schedule and its sensor start at a bar's close
            ids = [sub.submit("ingest_job", s) for s in symbols]
            sub.wait(ids, 3600)
            return sub.run("features_publish_job", [None])

        tick_s, tick_ids = _timed(tick)
        return {
            "symbols": n_symbols,
            "workers": n_workers,
            "first_cycle_s": {
                "ingest": ingest,
                "features": features,
                "training": train,
                "publish": publish,
            },
            "tick_s": tick_s,
            "tick_steps_s": _step_seconds(sub, tick_ids),
        }


def bench_cluster_universe(sizes: tuple[int, ...] = (3, 30), n_workers: int = 2) -> dict:
    """The whole cycle for each universe size on the cluster profile, then one live tick: all
    ingest runs submitted at once (as the schedule does at a bar's close), then the
    ``features_publish_job`` run; ``tick_s`` from the first submission to the publish's end."""
    runs = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="levibot-bench-universe-") as tmp:
            runs.append(_cycle(n, Path(tmp), n_workers))
    by = {r["symbols"]: r for r in runs}
    lo, hi = min(sizes), max(sizes)
    return {
        "runs": runs,
        "tick_growth": round(by[hi]["tick_s"] / by[lo]["tick_s"], 2),
        "budget_s": 15 * 60,
        "within_budget": all(r["tick_s"] <= 15 * 60 for r in runs),
        "cores": os.cpu_count(),
        "model_env": MODEL_ENV,
        "note": "the tick excludes the schedule's own delay after the close (about 1 s, "
        "tick_latency); every worker on this one 2-core machine",
    }
