"""Real servers on loopback for the cluster tests (``pytest -m cluster``, ``make test-cluster``).

``postgres_server`` starts a throwaway PostgreSQL for the test session from the Debian
``postgresql`` package's binaries (``initdb``, ``pg_ctl`` on PATH or in
``/usr/lib/postgresql/<version>/bin``): a fresh cluster in a temp dir, listening on
127.0.0.1 only (a free port; its unix socket in that dir, not in /var/run), a superuser with a
random password over TCP (scram-sha-256) and one empty database; ``pg_ctl stop -m fast`` and the
temp dir removed at the end. PostgreSQL refuses to run as root: as root the server runs as the
``postgres`` system user (``runuser -u postgres --``), which the Debian package creates.

Missing binaries skip the tests with the reason, or fail them when ``CI=true`` (where .ci/run
installs the package, so a skip would hide a broken set-up).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVICE_USER = "postgres"  # created by Debian's postgresql package


@dataclass(frozen=True)
class PostgresServer:
    """Connection settings of a running server: what LEVIBOT_PG_* would hold."""

    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The ``LEVIBOT_PG_*`` variables deploy/cluster/dagster.yaml reads."""
        return {
            "LEVIBOT_PG_HOST": self.host,
            "LEVIBOT_PG_PORT": str(self.port),
            "LEVIBOT_PG_USER": self.user,
            "LEVIBOT_PG_PASSWORD": self.password,
            "LEVIBOT_PG_DB": self.db,
        }

    def connect(self, db: str | None = None):
        """A psycopg2 connection (autocommit) to ``db`` (default: the test database)."""
        import psycopg2

        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=db or self.db,
        )
        conn.autocommit = True
        return conn


def postgres_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian does not put them on PATH)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    dirs = [Path(d) for d in glob.glob(PG_BIN_GLOB) if (Path(d) / "initdb").exists()]
    dirs.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else -1)
    return dirs[-1] if dirs else None


def unavailable(reason: str) -> None:
    """Fail with ``reason`` under CI (CI=true), skip with it elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"cluster tests need PostgreSQL under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], as_user: list[str], cwd: Path) -> None:
    done = subprocess.run(as_user + cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def run_as_service_user(root: Path) -> list[str]:
    """The command prefix that runs the server's programs: none for an ordinary user; as root,
    ``runuser -u postgres --``, with ``root`` (the temp dir) handed to that user."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        unavailable(f"running as root and there is no {SERVICE_USER!r} user to run PostgreSQL")
    for path in (root, *root.iterdir()):
        os.chown(path, account.pw_uid, account.pw_gid)
    return ["runuser", "-u", SERVICE_USER, "--"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 for the test session, with database ``levibot_dagster``."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        unavailable(
            f"PostgreSQL server binaries (initdb, pg_ctl) not on PATH nor in {PG_BIN_GLOB}: "
            "apt-get install postgresql"
        )
    server = PostgresServer("127.0.0.1", free_port(), "levibot", secrets.token_urlsafe(16), "")
    # Under /tmp: a short path (a socket path is <= 107 bytes) that the postgres user can reach.
    root = Path(tempfile.mkdtemp(prefix="levibot-pg-", dir="/tmp"))
    data, log, pwfile = root / "data", root / "server.log", root / "pwfile"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60"]
    started = False
    try:
        pwfile.write_text(server.password + "\n")
        as_user = run_as_service_user(root)
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", server.user, "--no-sync"]
        auth = ["--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256"]
        _run(initdb + auth + ["-E", "UTF8", "--locale=C"], as_user, root)
        options = f"-p {server.port} -c listen_addresses=127.0.0.1 "
        options += f"-c unix_socket_directories={root} -c fsync=off"
        try:
            _run(pg_ctl + ["-o", options, "start"], as_user, root)
        except RuntimeError as err:
            raise RuntimeError(f"{err}\n{log.read_text()[-2000:] if log.exists() else ''}") from err
        started = True
        conn = server.connect(db="postgres")
        try:
            conn.cursor().execute("CREATE DATABASE levibot_dagster")
        finally:
            conn.close()
        yield replace(server, db="levibot_dagster")
    finally:
        if started:
            _run(pg_ctl + ["-m", "fast", "stop"], as_user, root)
        shutil.rmtree(root, ignore_errors=True)
