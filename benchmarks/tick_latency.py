"""Tick latency (issue: the live loop): from a bar's close to its prediction served by the API,
through the schedule, sensors and run launcher of a real ``dagster dev``.

A temporary home gets 3 days of synthetic 1-minute bars and tiny trained models (small profile,
LEVIBOT_MC_SAMPLES=50 as in production), built in process on the instance ``dagster dev`` will
use; then ``dagster dev`` runs with ``LEVIBOT_TIMEFRAME=1m`` and ``LEVIBOT_INGEST_CRON="* * * *
*"`` (a bar closes every minute, the schedule fires at the close) and the real API is polled
every 0.2 s. A tick's latency is the time from the bar's close to the first API answer that
serves that bar for every symbol; its breakdown comes from the instance's run records (when each
run was created by the daemon, started by its worker and ended), relative to the close. The
first tick after start-up is left out (the webserver and daemon are still loading). The
1-minute bar is only a faster clock: the work per tick is the same as on 15-minute bars.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from benchmarks.dagster_dev import ROOT, start_dagster_dev, stop
from benchmarks.publish import ENV, synthetic_home

TF_MS = 60_000
TICK_ENV = {
    **ENV,
    "LEVIBOT_TIMEFRAME": "1m",
    "LEVIBOT_INGEST_CRON": "* * * * *",
    "LEVIBOT_RETRAIN_CRON": "4 4 1 1 *",
    # A planted edge and 2,000 training bars (of the 4,320 one-minute bars of 3 days): with 600
    # bars, even with the edge, a model could say nothing (isotonic maps every bar to one
    # value; seen once in about 20 runs) and the blocking check predictions_valid rightly
    # stops the training the benchmark needs.
    "LEVIBOT_SYNTHETIC_EDGE": "80@4",
    "LEVIBOT_WALK": "2000,400,400,400",
    "DAGSTER_DISABLE_TELEMETRY": "true",
}
JOBS = ("ingest_job", "features_job", "features_publish_job", "publish_job")


def _prepare(home: str) -> str:
    """Bars, features, models and a first publish on the instance at ``home``/dagster."""
    import dagster as dg

    from levibot_pipelines.definitions import load_definitions
    from levibot_pipelines.settings import Settings

    dagster_home = Path(home) / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    defs, settings = load_definitions(), Settings.from_env()
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with dg.DagsterInstance.from_config(str(dagster_home)) as inst:
        for symbol in settings.market.symbols:
            defs.resolve_job_def("ingest_job").execute_in_process(
                partition_key=symbol, instance=inst, run_config=quiet
            )
        defs.resolve_job_def("features_job").execute_in_process(instance=inst, run_config=quiet)
        for symbol in settings.market.symbols:
            defs.resolve_job_def("training_job").execute_in_process(
                partition_key=symbol, instance=inst, run_config=quiet
            )
        defs.resolve_job_def("publish_job").execute_in_process(instance=inst, run_config=quiet)
    return str(dagster_home)


def _served_bars(base_url: str, symbols: tuple[str, ...]) -> set[int]:
    bars = set()
    for symbol in symbols:
        url = f"{base_url}/ml/predict?symbol={symbol}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                bars.add(int(json.loads(response.read())["bar_time"]))
        except OSError:
            return set()
    return bars


def _runs_after(dagster_home: str, close_ms: int) -> dict[str, list[dict]]:
    """Each job's runs created after ``close_ms``: created/started/ended in s after the close."""
    import dagster as dg

    out: dict[str, list[dict]] = {}
    with dg.DagsterInstance.from_config(dagster_home) as inst:
        for job in JOBS:
            records = inst.get_run_records(dg.RunsFilter(job_name=job))
            rows = []
            for r in records:
                created = r.create_timestamp.timestamp()
                if not close_ms <= created * 1000 < close_ms + TF_MS:
                    continue  # another tick's run
                rows.append(
                    {
                        "status": r.dagster_run.status.value,
                        "created_s": round(created - close_ms / 1000, 2),
                        "started_s": _rel(r.start_time, close_ms),
                        "ended_s": _rel(r.end_time, close_ms),
                    }
                )
            out[job] = sorted(rows, key=lambda row: row["created_s"])
    return out


def _wait_for_idle(dagster_home: str, timeout_s: float) -> None:
    """Wait until no run is queued, starting or started (at most ``timeout_s``)."""
    import dagster as dg

    busy = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.from_config(dagster_home) as inst:
        while inst.get_runs_count(dg.RunsFilter(statuses=busy)) and time.monotonic() < deadline:
            time.sleep(0.5)


def _rel(ts: float | None, close_ms: int) -> float | None:
    return None if ts is None else round(ts - close_ms / 1000, 2)


def _stop(proc: subprocess.Popen) -> None:
    """Stop ``dagster dev`` by its pid: its process group, then any process it started in a
    session of its own (a run worker) that is still alive."""
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    stop(proc)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(children, timeout=10)


def bench_tick_latency(
    ticks: int = 3,
    max_wait_s: float = 600.0,
    inspect: Callable[[Path, str], dict] | None = None,
) -> dict:
    """Median and worst close-to-served latency over ``ticks`` real ``dagster dev`` ticks (after
    the start-up tick). ``inspect(home, dagster_home)``, when given, runs once ``dagster dev`` is
    stopped and before the home is removed; what it returns is under ``"inspected"``."""
    from levibot_pipelines.cli import api_server
    from levibot_pipelines.settings import Settings

    with synthetic_home("levibot-bench-tick-", TICK_ENV, days=3) as home:
        t0 = time.monotonic()
        dagster_home = _prepare(home)
        prepare_s = time.monotonic() - t0
        settings = Settings.from_env()
        symbols = settings.market.symbols
        log_path = Path(home) / "dagster_dev.log"
        env = {**os.environ, "DAGSTER_HOME": dagster_home}
        proc, _ = start_dagster_dev(env, log_path)
        served: dict[int, float] = {}  # bar open ms -> wall time (s) it was served for all
        try:
            with api_server(settings) as base_url:
                assert base_url, "the API did not start"
                deadline = time.monotonic() + max_wait_s
                # the bar _prepare published, the start-up tick's, then the measured ticks
                while len(served) < ticks + 2 and time.monotonic() < deadline:
                    bars = _served_bars(base_url, symbols)
                    if len(bars) == 1:
                        served.setdefault(bars.pop(), time.time())
                    time.sleep(0.2)
            _wait_for_idle(dagster_home, timeout_s=90.0)  # the last tick's run ends unharmed
        finally:
            _stop(proc)
        measured = []
        for bar in sorted(served)[2:]:
            close_ms = bar + TF_MS
            measured.append(
                {
                    "bar_close": close_ms,
                    "served_s": round(served[bar] - close_ms / 1000, 2),
                    "runs": _runs_after(dagster_home, close_ms - 1000),
                }
            )
        inspected = inspect(Path(home), dagster_home) if inspect else None
        log_tail = log_path.read_text().splitlines()[-20:]
    latencies = [m["served_s"] for m in measured]
    if not latencies:
        return {"error": "no tick served", "dagster_dev_log_tail": log_tail}
    return {
        "symbols": list(symbols),
        "timeframe": "1m",
        "ingest_cron": TICK_ENV["LEVIBOT_INGEST_CRON"],
        "prepare_s": round(prepare_s, 1),
        "ticks": len(latencies),
        "median_s": round(statistics.median(latencies), 2),
        "worst_s": round(max(latencies), 2),
        "target_s": 60,
        "per_tick": measured,
        **({"inspected": inspected} if inspect else {}),
    }


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(json.dumps(bench_tick_latency(ticks=n), indent=2))
