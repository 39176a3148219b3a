"""Real servers on loopback for the cluster tests (``pytest -m cluster``, ``make test-cluster``),
started by the same functions as ``make cluster-up`` (``deploy/cluster/stack.py``):

- ``postgres_server``: a throwaway PostgreSQL from the Debian ``postgresql`` package's binaries,
  a fresh cluster in a temp dir listening on 127.0.0.1 only (its unix socket in that dir), a
  superuser with a random password over TCP and the databases ``levibot_dagster`` and
  ``levibot_mlflow``; as root the server runs as the ``postgres`` system user;
- ``redis_server``: Debian's ``redis-server`` without persistence, the Celery broker and backend.

Each is stopped and its directory removed at the end of the session. Missing binaries skip the
tests with the reason, or fail them when ``CI=true`` (where .ci/run installs the packages, so a
skip would hide a broken set-up).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.cluster.stack import (
    Postgres,
    Redis,
    postgres_bin_dir,
    redis_binary,
    start_postgres,
    start_redis,
)


def unavailable(reason: str) -> None:
    """Fail with ``reason`` under CI (CI=true), skip with it elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"cluster tests need their servers under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1 for the test session (database ``levibot_dagster``)."""
    if postgres_bin_dir() is None:
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    # Under /tmp: a short path (a socket path is <= 107 bytes) that the postgres user can reach.
    root = Path(tempfile.mkdtemp(prefix="levibot-pg-", dir="/tmp"))
    server = None
    try:
        server = start_postgres(root)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    """A redis-server on 127.0.0.1 for the test session: the Celery broker (db 0) and result
    backend (db 1)."""
    if redis_binary() is None:
        unavailable("redis-server not found: apt-get install redis-server")
    root = Path(tempfile.mkdtemp(prefix="levibot-redis-"))
    server = start_redis(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
