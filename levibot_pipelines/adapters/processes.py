"""Is a local process still the one that was started? Used to tell a live run worker from one
that was killed (``kill -9``, an OOM kill, a restart) while its run still says STARTED."""

from __future__ import annotations

import psutil

# Process start times come from the kernel in clock ticks; allow this much between the
# process's start and the event that recorded its pid.
START_SLACK_S = 2.0


def process_alive(pid: int, started_by_s: float) -> bool:
    """Whether process ``pid`` on this host is alive and is the process that existed at
    ``started_by_s`` (seconds since the epoch, e.g. when its pid was logged).

    False when no such process exists, when it is a zombie (killed, not yet reaped), or when
    it started more than ``START_SLACK_S`` after ``started_by_s``: the pid was reused by a
    later process, so the one that was logged is gone. Access errors count as alive (the
    process exists, it belongs to someone else)."""
    if pid <= 0:
        raise ValueError(f"pid must be a positive integer, got {pid}")
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= started_by_s + START_SLACK_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
