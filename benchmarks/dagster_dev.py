"""A real ``dagster dev`` (webserver + daemon) started in the background for the tick benchmark
and the end-to-end tests: on a free loopback port, in its own process group, stopped by its pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

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


def start_dagster_dev(env: dict, log_path: Path) -> tuple[subprocess.Popen, int]:
    """``dagster dev`` with environment ``env`` (``DAGSTER_HOME`` included) on a free loopback
    port, in its own process group, its output appended to ``log_path``: ``(process, port)``."""
    port = free_port()
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, *cmd],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, port


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop ``proc``'s whole process group by its pid: ``sig`` first, SIGKILL after 30 s."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
