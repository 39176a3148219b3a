"""Performance suite (`make bench`): each benchmark writes its figures to benchmarks/results/*.json.

Targets (issue: market data foundation):
- feature table for 3 symbols x 1,000,000 bars: <= 2 s wall, <= 2 GB peak memory;
- incremental tick (1 new bar per symbol into 100k bars per symbol, features rebuilt): <= 1 s;
- full two-year history of the three symbols through ccxt from a local server: bars/s (reported).

Targets (issue: near the hardware's limit), feature table for 3 symbols x 1,000,000 bars:
- >= 2x the speed of a straightforward eager polars version measured in the same run;
- the build's own peak memory (above the bars held before it) <= 512 MB.

Targets (issues: models; near the hardware's limit), in ``benchmarks/models.py``:
- seed-profile training throughput >= 40% of the matmul peak of the dtype used (fp32 or bf16,
  ``LEVIBOT_PRECISION``), measured in the same run, and >= 4x the pre-issue path on an AMX CPU;
- MC inference, 3 symbols x T=50 (seed profile): >= 3x faster than the pre-issue batched pass;
- the uncertainty estimate of one trained model before vs after (PICP, epistemic spread);
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

Issue: outgrowing one machine, in ``benchmarks/cluster.py`` (PostgreSQL, Redis and Celery
workers started on loopback): training three symbols with one worker vs two (the ratio), and a
synthetic universe of 3 and of 30 symbols through ingest, features, training and publish, then
one live tick (every ingest run and the publish) within the 15-minute bar.
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


def _straightforward_features(
    bars: pl.DataFrame, *, tf_ms: int, horizon: int, warmup: int = 200
) -> pl.DataFrame:
    """The feature table as one first writes it in polars, the benchmark's reference: eager,
    long format, the cross-asset columns computed on the pivoted closes and joined onto the
    bars, then one ``with_columns`` chain of window functions over ``symbol``. The same columns
    and values as ``build_features`` on a grid without gaps, such as the benchmark's bars
    (checked in ``test_features_equivalence.py``); it does not split at gaps (``tf_ms`` unused),
    so it does less work than ``build_features`` and its time is a lower bound."""
    from levibot_pipelines.core.data.features import FEATURE_SCHEMA

    btc, eth, sol = (pl.col(s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    log_ratios = {"ratio_BTC_ETH": (btc / eth).log(), "ratio_ETH_SOL": (eth / sol).log()}
    cross = (
        bars.pivot(on="symbol", index="timestamp", values="close")
        .drop_nulls()
        .sort("timestamp")
        .with_columns(
            *((x - x.ewm_mean(span=50, adjust=False)).alias(n) for n, x in log_ratios.items()),
            lead_ret_BTC=btc.log().diff(),
            ratio_btc_eth_raw=btc / eth,
            ratio_eth_sol_raw=eth / sol,
        )
        .drop("BTCUSDT", "ETHUSDT", "SOLUSDT")
    )
    close, lc = pl.col("close"), pl.col("close").log()
    std_20 = close.rolling_std(20).over("symbol")
    return (
        bars.join(cross, on="timestamp", how="inner")
        .sort("symbol", "timestamp")
        .with_columns(
            _row=pl.int_range(pl.len()).over("symbol"),
            ret_1=lc.diff().over("symbol"),
            **{
                f"ema_{n}": close / close.ewm_mean(span=n, adjust=False).over("symbol") - 1.0
                for n in (20, 50, 200)
            },
            z_20=pl.when(std_20 > close * 1e-12)
            .then((close - close.rolling_mean(20).over("symbol")) / std_20)
            .otherwise(0.0),
            range=(pl.col("high") - pl.col("low")) / close,
            vol_20=lc.diff().rolling_std(20).over("symbol"),
            fwd_ret=(lc.shift(-horizon) - lc).over("symbol"),
        )
        .filter(pl.col("_row") >= warmup - 1)
        .with_columns(y_up=(pl.col("fwd_ret") > 0).cast(pl.Int8))
        .select(list(FEATURE_SCHEMA))
    )


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0: ``5`` into
    ``/proc/self/clear_refs``), so that the peak read later is the build's, not that of making
    the bars; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes(reset: bool) -> int:
    """The RSS high-water mark: since ``_reset_peak_rss`` when it worked, else the process's."""
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _features_worker(n_bars: int, repeats: int, impl: str = "build_features") -> dict:
    """Runs in a fresh process so that its peak RSS is the benchmark's own. ``impl``:
    ``build_features`` or ``straightforward`` (``_straightforward_features``)."""
    import gc

    import psutil

    from levibot_pipelines.core.data.features import build_features
    from levibot_pipelines.core.data.synthetic import simulate_bars

    build = {"build_features": build_features, "straightforward": _straightforward_features}[impl]
    bars = pl.concat(
        [
            simulate_bars(s, 0, (n_bars - 1) * TF_MS, TF_MS, seed=1).with_columns(symbol=pl.lit(s))
            for s in SYMBOLS
        ]
    )
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    reset = _reset_peak_rss()
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = build(bars, tf_ms=TF_MS, horizon=HORIZON)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        del out
    peak = _peak_rss_bytes(reset)
    return {
        "impl": impl,
        "rows_in": bars.height,
        "wall_s_runs": [round(w, 3) for w in walls],
        "cpu_s_runs": [round(c, 3) for c in cpus],
        "peak_rss_mb": round(peak / 2**20, 1),
        "rss_before_build_mb": round(rss_before / 2**20, 1),
        "peak_scope": "the builds (high-water mark reset after the bars were made)"
        if reset
        else "the whole process (ru_maxrss)",
    }


def _run_features_worker(n_bars: int, repeats: int, impl: str) -> dict:
    code = (
        "import json, sys; from benchmarks.run import _features_worker; "
        f"print(json.dumps(_features_worker({n_bars}, {repeats}, {impl!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_features(n_bars: int = 1_000_000, repeats: int = 3, rounds: int = 2) -> dict:
    """``build_features`` against ``_straightforward_features`` on the same bars (3 symbols x
    ``n_bars``), each in its own fresh process, alternated ``rounds`` times so that the load of
    a shared machine falls on both alike. Walls are medians over all runs; peaks the largest of
    any process; ``build_peak_mb`` the peak above the RSS before the first build (the bars, the
    interpreter and the libraries excluded)."""
    impls = ("build_features", "straightforward")
    runs: dict[str, list[dict]] = {impl: [] for impl in impls}
    for _ in range(rounds):
        for impl in impls:
            runs[impl].append(_run_features_worker(n_bars, repeats, impl))
    summary = {}
    for impl, procs in runs.items():
        walls = [w for p in procs for w in p["wall_s_runs"]]
        cpus = [c for p in procs for c in p["cpu_s_runs"]]
        summary[impl] = {
            "wall_s_runs": walls,
            "wall_s_median": round(statistics.median(walls), 3),
            "cpu_s_median": round(statistics.median(cpus), 3),
            "peak_rss_mb": max(p["peak_rss_mb"] for p in procs),
            "rss_before_build_mb": max(p["rss_before_build_mb"] for p in procs),
            "build_peak_mb": round(
                max(p["peak_rss_mb"] - p["rss_before_build_mb"] for p in procs), 1
            ),
        }
    ours, ref = summary["build_features"], summary["straightforward"]
    result = {
        "bars_per_symbol": n_bars,
        "rows_in": runs["build_features"][0]["rows_in"],
        **{k: ours[k] for k in ("wall_s_runs", "wall_s_median", "cpu_s_median", "peak_rss_mb")},
        "rss_before_build_mb": ours["rss_before_build_mb"],
        "build_peak_mb": ours["build_peak_mb"],
        "peak_scope": runs["build_features"][0]["peak_scope"],
        "straightforward": ref,
        "speedup_vs_straightforward": round(ref["wall_s_median"] / ours["wall_s_median"], 2),
        # CPU seconds (all threads) suffer less than wall time from other load on the machine.
        "cpu_ratio_vs_straightforward": round(ref["cpu_s_median"] / ours["cpu_s_median"], 2),
        "peak_vs_straightforward": round(ours["peak_rss_mb"] / ref["peak_rss_mb"], 2),
        "target_wall_s": 2.0,
        "target_peak_mb": 2048,
        "target_speedup": 2.0,
        "target_build_peak_mb": 512,
    }
    result["met"] = (
        result["wall_s_median"] <= result["target_wall_s"]
        and result["peak_rss_mb"] <= result["target_peak_mb"]
    )
    result["met_speedup"] = result["speedup_vs_straightforward"] >= result["target_speedup"]
    result["met_build_peak"] = result["build_peak_mb"] <= result["target_build_peak_mb"]
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


def bench_celery_training() -> dict:
    from benchmarks.cluster import bench_celery_training as run

    return run()


def bench_cluster_universe() -> dict:
    from benchmarks.cluster import bench_cluster_universe as run

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
    "celery_training_1_vs_2_workers": bench_celery_training,
    "cluster_universe_3_vs_30": bench_cluster_universe,
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
