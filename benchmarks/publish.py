"""Publish latency (issue: serving): from a feature-table update to the published file.

A temporary home is filled with 20 days of synthetic bars and tiny trained models (small
profile, LEVIBOT_MC_SAMPLES=50 as in production); then, repeatedly, the feature table is rebuilt,
the ``publish_on_features`` sensor is evaluated and the ``publish_job`` it requests is executed
in process; the figure is the wall time from the end of the feature build to the JSON file being
replaced (``publish_job`` also scores what matured and handles the shadow challengers after the
file is written; those steps are in the figure too). The daemon's sensor loop and the run launch
of a deployed instance come on top: ``benchmarks/tick_latency.py`` measures the whole tick.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

ENV = {
    "LEVIBOT_SOURCE": "synthetic",
    "LEVIBOT_PROFILE": "small",
    "LEVIBOT_WALK": "600,150,150,200",
    "LEVIBOT_PURGE": "40",
    "LEVIBOT_EPOCHS": "1",
    "LEVIBOT_MC_SAMPLES": "50",
    "LEVIBOT_REPORT_FOLDS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


@contextmanager
def synthetic_home(prefix: str, env: dict[str, str], days: int = 20) -> Iterator[str]:
    """A temporary ``LEVIBOT_HOME`` (yielded) with ``env`` and ``LEVIBOT_START`` ``days`` ago
    set in the process environment for the block; the previous values come back after it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        start = (datetime.now(UTC) - timedelta(days=days)).date().isoformat()
        saved = {k: os.environ.get(k) for k in [*env, "LEVIBOT_HOME", "LEVIBOT_START"]}
        os.environ.update({**env, "LEVIBOT_HOME": tmp, "LEVIBOT_START": start})
        try:
            yield tmp
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def bench_publish(repeats: int = 5) -> dict:
    import dagster as dg

    with synthetic_home("levibot-bench-publish-", ENV):
        from levibot_pipelines.adapters.home import published_dir
        from levibot_pipelines.definitions import load_definitions
        from levibot_pipelines.defs.resources import TradingResource
        from levibot_pipelines.settings import Settings

        defs = load_definitions()
        settings = Settings.from_env()
        trading = TradingResource(settings)
        quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
        latest = published_dir(settings.home) / "latest_predictions.json"
        with dg.instance_for_test() as inst:
            for symbol in settings.market.symbols:
                defs.resolve_job_def("ingest_job").execute_in_process(
                    partition_key=symbol, instance=inst, run_config=quiet
                )
            features = defs.resolve_job_def("features_job")
            features.execute_in_process(instance=inst, run_config=quiet)
            for symbol in settings.market.symbols:
                defs.resolve_job_def("training_job").execute_in_process(
                    partition_key=symbol, instance=inst, run_config=quiet
                )
            sensor = defs.resolve_sensor_def("publish_on_features")
            publish = defs.resolve_job_def("publish_job")
            cursor, runs = None, []
            for _ in range(repeats):
                # As if a new bar had closed: the sensor publishes only a bar not yet published.
                latest.unlink(missing_ok=True)
                features.execute_in_process(instance=inst, run_config=quiet)
                t0 = time.perf_counter()
                tick = sensor.evaluate_tick(
                    dg.build_sensor_context(
                        instance=inst,
                        definitions=defs,
                        cursor=cursor,
                        resources={"trading": trading},
                    )
                )
                assert len(tick.run_requests) == 1, tick.skip_message
                cursor = tick.cursor
                publish.execute_in_process(instance=inst, run_config=quiet)
                runs.append(time.perf_counter() - t0)
                assert latest.exists()
            published_at = json.loads(latest.read_text())["published_at"]
    return {
        "symbols": list(settings.market.symbols),
        "mc_samples": settings.models.mc_samples,
        "profile": "small",
        "median_s": round(statistics.median(runs), 3),
        "runs_s": [round(r, 3) for r in runs],
        "last_published_at_ms": published_at,
        "excluded": "the daemon's sensor loop and run launch (see tick_latency)",
    }


if __name__ == "__main__":
    print(json.dumps(bench_publish(), indent=2))
