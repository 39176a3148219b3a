"""API latency benchmark (issue: serving): ``/ml/predict_ensemble?symbol=BTCUSDT`` at a fixed
open-loop rate of 500 requests/s must answer with p99 <= 20 ms.

The server runs ``levibot_pipelines.api.run_server`` (uvicorn, one worker) in its own process
over a published home built in a temporary directory; the load generator runs in another
process. Open loop: request ``i`` is due at ``t0 + i / rate`` whatever happened before, and its
latency runs from that due time to the end of the response, so a slow response also charges
the requests queued behind it (no coordinated omission). The due requests are spread over
``threads`` keep-alive connections (``http.client``, the cheapest client in the standard
library, so that the client steals as little CPU as possible from the server on a small
machine). A second figure is the closed-loop maximum: ``clients`` connections sending back to
back.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

PATH = "/ml/predict_ensemble?symbol=BTCUSDT"
TARGET_P99_MS = 20.0
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TF_MS = 900_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_home(home: Path) -> None:
    """Publish one realistic row per symbol on the newest closed bar (model files are
    placeholders: the ensemble endpoint never loads them)."""
    import polars as pl

    from levibot_pipelines.adapters.prediction_files import write_published
    from levibot_pipelines.core.data.timeframes import last_closed_bar

    now = int(time.time() * 1000)
    bar = last_closed_bar(now, TF_MS)
    rows = []
    for i, s in enumerate(SYMBOLS):
        rows.append(
            {
                "symbol": s,
                "bar_time": bar,
                "bar_close_time": bar + TF_MS,
                "published_at": now,
                "source": "synthetic",
                "close": 100.0 * (i + 1),
                "deep_p_up": 0.57,
                "deep_mu": 0.0003,
                "deep_sigma": 0.0051,
                "deep_aleatoric": 2.5e-5,
                "deep_epistemic": 1.0e-6,
                "deep_epistemic_p": 3.0e-4,
                "deep_confidence": 0.12,
                "mc_samples": 50,
                "deep_version": "3",
                "lgbm_p_up": 0.54,
                "lgbm_confidence": 0.08,
                "lgbm_version": "2",
                "ensemble_p_up": 0.555,
                "ensemble_confidence": 0.11,
                "w_lgbm": 0.45,
                "regime": "trend",
                "regime_state": 1,
                "entry_threshold": 0.55,
                "signal": "ENTRY_LONG",
                "position": 0.4,
                "size": 0.4,
                "stop_loss": 98.5,
                "take_profit": 103.0,
                "kill_switch": "ACTIVE",
                "kill_switch_reason": "",
                "ratio_btc_eth": 30.1,
                "ratio_eth_sol": 16.2,
                "data_lag_s": (now - bar - TF_MS) / 1000,
                "paper_equity": 1.01,
                "paper_drawdown": 0.003,
                "decision_model": "ensemble",
                "horizon": 16,
                "expected_net_bps": 12.3,
                "decision_reason": "entry: expected net +12.3 bps over 16 bars",
                "closed_side": None,
            }
        )
    meta = {s: json.dumps({"version": "3", "name": f"levibot-deep-{s}"}).encode() for s in SYMBOLS}
    models = {
        s: {"state_dict.pt": b"", "config.json": b"{}", "calibrator.json": b"{}", "meta.json": m}
        for s, m in meta.items()
    }
    write_published(home, pl.DataFrame(rows), models)


def start_server(home: Path, port: int, log_path: Path) -> subprocess.Popen:
    """``run_server`` in a child process (its own interpreter, so its own GIL)."""
    code = (
        "from levibot_pipelines.api import run_server\n"
        "from levibot_pipelines.settings import Settings\n"
        f"run_server(Settings.from_env({{'LEVIBOT_HOME': {str(home)!r}}}), '127.0.0.1', {port})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVIBOT_")}
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log, env=env)


def wait_ready(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", PATH)
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the API on port {port} did not answer {PATH} within {timeout_s} s")


def _get(conn: http.client.HTTPConnection) -> bool:
    conn.request("GET", PATH)
    resp = conn.getresponse()
    resp.read()
    return resp.status == 200


def open_loop(port: int, rate: float, duration_s: float, threads: int = 32) -> dict:
    """Fixed-rate load; latency from each request's due time. Runs in the load process."""
    n = int(rate * duration_s)
    lat = np.full(n, np.nan)  # seconds from due time to the end of the response
    lag = np.full(n, np.nan)  # seconds the send started after its due time (client lateness)
    ok = np.zeros(n, dtype=bool)
    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.2

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(k, n, threads):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            lag[i] = time.perf_counter() - due
            try:
                ok[i] = _get(conn)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            lat[i] = time.perf_counter() - due
        conn.close()

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    ms = lat * 1000
    return {
        "requests": n,
        "errors": int(n - ok.sum()),
        "achieved_rps": round(n / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "send_lag_p99_ms": round(float(np.percentile(lag * 1000, 99)), 3),
        "client_cpu_ms_per_request": round((time.process_time() - cpu0) * 1000 / n, 4),
        "threads": threads,
    }


def closed_loop(port: int, clients: int, duration_s: float) -> dict:
    """``clients`` connections, each sending its next request as soon as the last returns."""
    counts, errors, lats = [0] * clients, [0] * clients, [[] for _ in range(clients)]
    stop = time.perf_counter() + duration_s

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while (start := time.perf_counter()) < stop:
            try:
                good = _get(conn)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn, good = http.client.HTTPConnection("127.0.0.1", port, timeout=10), False
            counts[k] += 1
            errors[k] += not good
            lats[k].append(time.perf_counter() - start)
        conn.close()

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    ms = np.concatenate([np.asarray(x) for x in lats]) * 1000
    return {
        "clients": clients,
        "requests": sum(counts),
        "errors": sum(errors),
        "rps": round(sum(counts) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def _server_cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def bench_api(
    duration_s: float = 10, rate: float = 500, clients: int = 8, closed_s: float = 5
) -> dict:
    """Start the API and a load process; return the open-loop and closed-loop figures."""
    with tempfile.TemporaryDirectory(prefix="levibot-api-bench-") as tmp:
        home = Path(tmp)
        build_home(home)
        port = _free_port()
        server = start_server(home, port, home / "server.log")
        try:
            wait_ready(port)
            spawn = get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as load:
                load.submit(closed_loop, port, 4, 1.0).result()  # warm up both processes
                cpu0 = _server_cpu_s(server.pid)
                result = load.submit(open_loop, port, rate, duration_s).result()
                server_cpu = _server_cpu_s(server.pid) - cpu0
                closed = load.submit(closed_loop, port, clients, closed_s).result()
        finally:
            server.terminate()
            server.wait(timeout=10)
    result["server_cpu_ms_per_request"] = round(server_cpu * 1000 / result["requests"], 4)
    return {
        "endpoint": PATH,
        "target_rate_rps": rate,
        "duration_s": duration_s,
        **result,
        "target_p99_ms": TARGET_P99_MS,
        "met": result["p99_ms"] <= TARGET_P99_MS and result["errors"] == 0,
        "closed_loop_max": closed,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }


if __name__ == "__main__":
    print(json.dumps(bench_api(), indent=2))
