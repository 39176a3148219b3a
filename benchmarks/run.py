"""Performance suite (`make bench`): each benchmark writes its figures to benchmarks/results/*.json.

Targets (issue: market data foundation):
- feature table for 3 symbols x 1,000,000 bars: <= 2 s wall, <= 2 GB peak memory;
- incremental tick (1 new bar per symbol into 100k bars per symbol, features rebuilt): <= 1 s;
- full two-year history of the three symbols through ccxt from a local server: bars/s (reported).

Targets (issue: models), in ``benchmarks/models.py``:
- seed-profile training throughput >= 40% of the fp32 matmul peak measured in the same run, and
  >= 2x a plain ``nn.TransformerEncoder`` eager loop of the same architecture and batch;
- MC inference, 3 symbols x T=50 (seed profile), batched vs a loop of T passes: >= 5x (p50);
- training wall time and peak memory of the demo (small profile, 3 symbols).

Targets (issue: policy and backtest), in ``benchmarks/backtest.py``:
- 1,000,000 bars with stops and take-profits, metrics included: <= 2 s.

Targets (issue: serving), in ``benchmarks/api.py`` and ``benchmarks/publish.py``:
- ``/ml/predict_ensemble`` at 500 requests/s open loop from a separate process: p99 <= 20 ms;
- publish latency from a feature-table update to the published file (reported).

Issue: the live loop, in ``benchmarks/dagster_jobs.py``: the run wall time of ``ingest_job`` and
``features_job`` with the multiprocess executor and with their own (in process), reported; in
``benchmarks/tick_latency.py``: from a bar's close to its prediction served by the API through a
real ``dagster dev`` (schedule, sensors, run queue and launcher): median and worst of several
ticks <= 60 s, with each run's created/started/ended times after the close.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from levibot_pipelines.settings import ModelSettings

RESULTS = Path(__file__).parent / "results"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TF_MS = 900_000
HORIZON = ModelSettings().label_horizon  # the default LEVIBOT_LABEL_HORIZON
SHARED_OHLCV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "polars": pl.__version__,
        "platform": platform.platform(),
    }


def _features_worker(n_bars: int, repeats: int) -> dict:
    """Runs in a fresh process so that its peak RSS is the benchmark's own."""
    import psutil

    from levibot_pipelines.core.data.features import build_features
    from levibot_pipelines.core.data.synthetic import simulate_bars

    bars = pl.concat(
        [
            simulate_bars(s, 0, (n_bars - 1) * TF_MS, TF_MS, seed=1).with_columns(symbol=pl.lit(s))
            for s in SYMBOLS
        ]
    )
    rss_before = psutil.Process().memory_info().rss
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = build_features(bars, tf_ms=TF_MS, horizon=HORIZON)
        walls.append(time.perf_counter() - t0)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "bars_per_symbol": n_bars,
        "rows_in": bars.height,
        "wall_s_runs": [round(w, 3) for w in walls],
        "wall_s_median": round(statistics.median(walls), 3),
        "peak_rss_mb": round(peak / 2**20, 1),
        "rss_before_build_mb": round(rss_before / 2**20, 1),
        "target_wall_s": 2.0,
        "target_peak_mb": 2048,
    }


def bench_features(n_bars: int = 1_000_000, repeats: int = 3) -> dict:
    code = (
        "import json, sys; from benchmarks.run import _features_worker; "
        f"print(json.dumps(_features_worker({n_bars}, {repeats})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["met"] = (
        result["wall_s_median"] <= result["target_wall_s"]
        and result["peak_rss_mb"] <= result["target_peak_mb"]
    )
    return result


def bench_incremental_tick(n_bars: int = 100_000, ticks: int = 5) -> dict:
    import duckdb

    from levibot_pipelines.adapters.sources import SyntheticSource
    from levibot_pipelines.adapters.store import ParquetStore, refresh_views
    from levibot_pipelines.core.data.features import build_features
    from levibot_pipelines.usecases.ingest import ingest_symbol

    with tempfile.TemporaryDirectory() as tmp:
        store = ParquetStore(Path(tmp))
        source = SyntheticSource(start_ms=0, tf_ms=TF_MS, seed=1)
        now = n_bars * TF_MS + 60_000
        for s in SYMBOLS:
            ingest_symbol(source, store, s, start_ms=0, now_ms=now, tf_ms=TF_MS)
        walls, phases = [], []
        for i in range(1, ticks + 1):
            t0 = time.perf_counter()
            added = [
                ingest_symbol(source, store, s, start_ms=0, now_ms=now + i * TF_MS, tf_ms=TF_MS)
                for s in SYMBOLS
            ]
            t1 = time.perf_counter()
            features = build_features(store.read_all_ohlcv(SYMBOLS), tf_ms=TF_MS, horizon=HORIZON)
            store.write_features(features)
            with duckdb.connect(str(Path(tmp) / "warehouse.duckdb")) as conn:
                refresh_views(conn, store)
            t2 = time.perf_counter()
            assert [a.rows_added for a in added] == [1, 1, 1]
            walls.append(t2 - t0)
            phases.append({"ingest_s": round(t1 - t0, 3), "features_s": round(t2 - t1, 3)})
    median = statistics.median(walls)
    return {
        "bars_per_symbol": n_bars,
        "ticks": ticks,
        "wall_s_runs": [round(w, 3) for w in walls],
        "wall_s_median": round(median, 3),
        "phases": phases,
        "target_wall_s": 1.0,
        "met": median <= 1.0,
        "note": "library path (ingest_symbol x3 + build_features + Parquet write + DuckDB views);"
        " Dagster's own per-run launch overhead is not included",
    }


def bench_ccxt_ingest() -> dict:
    if not (SHARED_OHLCV / "BTCUSDT-15m.parquet").exists():
        return {"skipped": f"real candles not found in {SHARED_OHLCV}"}
    from levibot_pipelines.adapters.sources import CcxtSource
    from levibot_pipelines.adapters.store import ParquetStore
    from levibot_pipelines.usecases.ingest import ingest_symbol
    from levibot_pipelines_tests.fake_exchange import FakeBinance

    frames = {s: pl.read_parquet(SHARED_OHLCV / f"{s}-15m.parquet") for s in SYMBOLS}
    start = min(int(f["timestamp"][0]) for f in frames.values())
    now = max(int(f["timestamp"][-1]) for f in frames.values()) + TF_MS
    with FakeBinance(frames) as fake, tempfile.TemporaryDirectory() as tmp:
        store = ParquetStore(Path(tmp))
        source = CcxtSource("binance", timeframe="15m", api_url=fake.api_url)
        t0 = time.perf_counter()
        reports = [
            ingest_symbol(source, store, s, start_ms=start, now_ms=now, tf_ms=TF_MS)
            for s in SYMBOLS
        ]
        wall = time.perf_counter() - t0
        pages = len(fake.kline_requests)
    bars = sum(r.rows_added for r in reports)
    return {
        "bars": bars,
        "pages": pages,
        "wall_s": round(wall, 2),
        "bars_per_s": round(bars / wall),
        "rate_limit_ms": source.exchange.rateLimit,
        "note": "ccxt rate limiting on (Binance's 50 ms between requests), local HTTP server",
    }


def bench_models() -> dict:
    from benchmarks.models import run_all

    return run_all()


def bench_backtest() -> dict:
    from benchmarks.backtest import bench_backtest as run

    return run()


def bench_api() -> dict:
    from benchmarks.api import bench_api as run

    return run()


def bench_publish() -> dict:
    from benchmarks.publish import bench_publish as run

    return run()


def bench_tick_latency() -> dict:
    from benchmarks.tick_latency import bench_tick_latency as run

    return run()


def bench_dagster_jobs() -> dict:
    from benchmarks.dagster_jobs import bench_dagster_jobs as run

    return run()


BENCHES = {
    "features_3x1m": bench_features,
    "incremental_tick": bench_incremental_tick,
    "ccxt_two_year_ingest": bench_ccxt_ingest,
    "models": bench_models,
    "backtest_1m": bench_backtest,
    "api_latency": bench_api,
    "publish_latency": bench_publish,
    "dagster_jobs": bench_dagster_jobs,
    "tick_latency": bench_tick_latency,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    RESULTS.mkdir(exist_ok=True)
    results = {"machine": machine(), "benchmarks": {}}
    for name in args.only or BENCHES:
        print(f"running {name} ...", flush=True)
        results["benchmarks"][name] = BENCHES[name]()
        print(json.dumps(results["benchmarks"][name], indent=2), flush=True)
    path = RESULTS / ("benchmarks.json" if not args.only else f"{'_'.join(args.only)}.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
