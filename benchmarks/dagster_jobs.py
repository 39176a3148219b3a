"""Run wall time of the small jobs by executor (issue: the live loop, latency).

``ingest_job`` (one symbol) and ``features_job`` are executed with ``dagster.execute_job`` on a
temporary instance and home (20 days of synthetic bars), once with the multiprocess executor (a
subprocess per step, Dagster's default) and once with the jobs' own executor (in process). The
difference is the start-up a step subprocess pays (interpreter, Dagster, the code location's
imports) for well under a second of work; the run worker's own start and the daemon's tick
intervals of a deployed instance come on top and are not measured here.
"""

from __future__ import annotations

import statistics
import sys
import time

import dagster as dg

from benchmarks.publish import synthetic_home
from levibot_pipelines.definitions import load_definitions

ENV = {"LEVIBOT_SOURCE": "synthetic", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _job(name: str, multiprocess: bool) -> dg.JobDefinition:
    job = load_definitions().resolve_job_def(name)
    return job.with_executor_def(dg.multiprocess_executor) if multiprocess else job


def ingest_multiprocess() -> dg.JobDefinition:
    return _job("ingest_job", True)


def ingest_configured() -> dg.JobDefinition:
    return _job("ingest_job", False)


def features_multiprocess() -> dg.JobDefinition:
    return _job("features_job", True)


def features_configured() -> dg.JobDefinition:
    return _job("features_job", False)


def bench_dagster_jobs(repeats: int = 3) -> dict:
    """Median and worst run wall time (s) per job and executor over ``repeats`` runs."""
    this = sys.modules[__name__]
    with synthetic_home("levibot-bench-jobs-", ENV):
        with dg.instance_for_test() as instance:

            def run(fn_name: str, partition: str | None) -> float:
                tags = {"dagster/partition": partition} if partition else {}
                job = dg.reconstructable(getattr(this, fn_name))
                t0 = time.perf_counter()
                result = dg.execute_job(job, instance=instance, tags=tags)
                if not result.success:
                    raise RuntimeError(f"{fn_name} failed in the benchmark")
                return time.perf_counter() - t0

            for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
                run("ingest_configured", symbol)
            out = {}
            for job, partition in (("ingest", "BTCUSDT"), ("features", None)):
                for executor in ("multiprocess", "configured"):
                    walls = [run(f"{job}_{executor}", partition) for _ in range(repeats)]
                    out[f"{job}_{executor}_s"] = {
                        "median": round(statistics.median(walls), 2),
                        "worst": round(max(walls), 2),
                    }
    out["configured_executor"] = "in_process"
    out["repeats"] = repeats
    return out
