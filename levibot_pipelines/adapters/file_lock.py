"""An exclusive advisory lock on a file, for read-modify-write cycles that several processes may
run at once (two overlapping ingest runs of one symbol, a sensor and a person's CLI on the
kill-switch). ``fcntl.flock``: released by the kernel when the holder dies, so a crash never
leaves a stale lock behind."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its folder when missing) for the body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
