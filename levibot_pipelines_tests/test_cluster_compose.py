"""deploy/cluster/docker-compose.yml, read statically (Docker does not run where the tests run):
the whole stack is there, the project's containers get the variables the loopback stack's
env.sh sets (deploy/cluster/stack.py) and nothing the project does not read, every secret comes
from the environment of `docker compose`, and the files the services name exist (in the image,
where the Dockerfile copies them)."""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path

# Telemetry must be off before mlflow is first imported (it starts its client on import).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import yaml  # noqa: E402
from mlflow.cli import server as mlflow_server_command  # noqa: E402

from deploy.cluster import stack  # noqa: E402
from levibot_pipelines.defs.executors import CPU_QUEUE, GPU_QUEUE  # noqa: E402
from levibot_pipelines.settings import VARIABLES, Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "deploy" / "cluster"
PROJECT_IMAGE = "levibot-pipelines:"
SERVICES = {
    "postgres", "redis", "seaweedfs", "object-store-init", "mlflow", "code-server",
    "dagster-webserver", "dagster-daemon", "cpu-worker", "gpu-worker", "api", "prometheus",
    "grafana",
}  # fmt: skip
# ${NAME}, ${NAME:-default}, ${NAME:?message} (and the forms without the colon)
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
CREDENTIALS_IN_URL = re.compile(r"://([^/@\s:]*):(\$\{[^}]*\}|[^/@\s]+)@")


def _compose() -> dict:
    return yaml.safe_load((CLUSTER / "docker-compose.yml").read_text())


def _interpolate(value: str, given: dict[str, str]) -> str:
    """What compose makes of ``value`` with the host variables ``given`` (defaults applied)."""

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if name in given:
            return given[name]
        assert "?" not in op, f"compose refuses to start without {name}: {arg}"
        return arg

    return INTERPOLATION.sub(one, value)


def _project_services(compose: dict) -> dict[str, dict]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image", "").startswith(PROJECT_IMAGE) and name != "mlflow"
    }


def _stack_env_names() -> set[str]:
    """The variables ``make cluster-up`` writes to env.sh (stack.Stack.env of a full stack)."""
    full = stack.Stack(
        root="/x",
        postgres=asdict(stack.Postgres("h", 1, "u", "p", "levibot_dagster", "/x", "/x")),
        redis=asdict(stack.Redis(2, 3, "/x")),
        object_store=asdict(stack.ObjectStore(4, 5, "/x", "ak", "sk")),
        mlflow=asdict(stack.MlflowServer(6, 7, "/x")),
    )
    return set(full.env())


def _dagster_yaml_env_names() -> set[str]:
    text = (CLUSTER / "dagster.yaml").read_text()
    return set(re.findall(r"^\s*env:\s*([A-Z_][A-Z0-9_]*)\s*$", text, flags=re.M))


def test_the_whole_stack_is_there_and_published_on_loopback_only():
    services = _compose()["services"]
    assert set(services) == SERVICES
    assert services["seaweedfs"]["image"].startswith("chrislusf/seaweedfs:")
    assert services["seaweedfs"]["command"][:1] == ["server"]
    assert "-s3" in services["seaweedfs"]["command"]
    published = {name: svc["ports"] for name, svc in services.items() if "ports" in svc}
    assert set(published) == {"mlflow", "dagster-webserver", "api", "prometheus", "grafana"}
    host_ports = [p.rsplit(":", 1)[0] for ports in published.values() for p in ports]
    assert all(p.startswith("127.0.0.1:") for p in host_ports), published
    assert len(set(host_ports)) == len(host_ports), "two services on one host port"


def test_the_project_services_run_one_image_with_the_cluster_environment():
    compose = _compose()
    project = _project_services(compose)
    assert set(project) == {
        "object-store-init", "code-server", "dagster-webserver", "dagster-daemon",
        "cpu-worker", "gpu-worker", "api",
    }  # fmt: skip
    for svc in [*project.values(), compose["services"]["mlflow"]]:
        build = svc["build"]
        assert (CLUSTER / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    env_sh = _stack_env_names()
    read_by_project = (
        set(VARIABLES) | {"LEVIBOT_HOME", "DAGSTER_HOME"} | _dagster_yaml_env_names() | env_sh
    )
    secrets = {"LEVIBOT_PG_PASSWORD": "pg-pw", "REDIS_PASSWORD": "redis-pw",
               "S3_ACCESS_KEY": "ak", "S3_SECRET_KEY": "sk",
               "LEVIBOT_API_TOKEN": "t" * 32}  # fmt: skip
    for name, svc in project.items():
        env = svc["environment"]
        assert env_sh <= set(env), (name, env_sh - set(env))
        assert set(env) <= read_by_project, (name, set(env) - read_by_project)
        # The variables env.sh sets, with the service names as hosts.
        assert env["LEVIBOT_EXECUTOR"] == "celery"
        assert env["LEVIBOT_DATA_URL"] == "s3://levibot/data"
        assert env["LEVIBOT_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["LEVIBOT_PG_HOST"] == "postgres" and env["LEVIBOT_PG_DB"] == "levibot_dagster"
        assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
        values = {k: _interpolate(str(v), secrets) for k, v in env.items()}
        settings = Settings.from_env(values)  # every LEVIBOT_* value is one the project takes
        assert settings.cluster.celery_broker == "redis://:redis-pw@redis:6379/0"
        assert settings.cluster.celery_backend == "redis://:redis-pw@redis:6379/1"
        assert settings.home == Path("/data/levibot")
        assert env["DAGSTER_HOME"] == "/data/levibot/dagster"
        # The cluster's Dagster instance in DAGSTER_HOME, on the shared home.
        assert f"./dagster.yaml:{env['DAGSTER_HOME']}/dagster.yaml:ro" in svc["volumes"]
        assert any(v.endswith(":/data/levibot") for v in svc["volumes"])
    assert project["api"]["environment"]["LEVIBOT_API_TOKEN"].startswith("${LEVIBOT_API_TOKEN:?")


def test_the_workers_serve_the_executor_queues_and_the_gpu_worker_has_the_gpu():
    services = _compose()["services"]
    worker = CLUSTER / "worker.sh"
    assert worker.exists() and os.access(worker, os.X_OK)
    cpu, gpu = services["cpu-worker"], services["gpu-worker"]
    assert cpu["command"] == ["/app/deploy/cluster/worker.sh", CPU_QUEUE]
    assert gpu["command"] == ["/app/deploy/cluster/worker.sh", GPU_QUEUE]
    assert int(_interpolate(str(cpu["deploy"]["replicas"]), {})) >= 2  # N cpu workers
    assert "resources" not in cpu["deploy"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    # The CUDA build of the one Dockerfile, under its own tag.
    index = _interpolate(gpu["build"]["args"]["TORCH_INDEX"], {})
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", index), index
    assert gpu["image"] != cpu["image"]
    assert "args" not in cpu["build"]


def test_no_secret_is_written_in_the_compose_file():
    compose = _compose()
    text = (CLUSTER / "docker-compose.yml").read_text()
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.fullmatch(str(value)), (name, key, value)
    # A URL's password is a variable too (the Celery URLs, the MLflow backend store).
    urls = CREDENTIALS_IN_URL.findall(text)
    assert len(urls) >= 3
    for _, password in urls:
        assert INTERPOLATION.fullmatch(password), password
    # A secret variable has no default (that would be a secret in the file): compose refuses to
    # start without it.
    for m in INTERPOLATION.finditer(text):
        if SECRET_NAME.search(m.group(1)):
            assert m.group(2) == ":?", m.group(0)
    assert compose["secrets"]["levibot_api_token"] == {"environment": "LEVIBOT_API_TOKEN"}


def test_third_party_services_get_only_what_they_read():
    compose = _compose()
    services = compose["services"]
    mlflow = services["mlflow"]
    server_vars = {p.envvar for p in mlflow_server_command.params if p.envvar}
    store_vars = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                  "MLFLOW_S3_ENDPOINT_URL"}  # fmt: skip
    assert set(mlflow["environment"]) <= server_vars | store_vars
    assert set(services["postgres"]["environment"]) == {
        "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
    }  # fmt: skip
    assert set(services["seaweedfs"]["environment"]) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert all(k.startswith("GF_") for k in services["grafana"]["environment"])
    redis = services["redis"]
    assert set(redis["environment"]) == {"REDIS_PASSWORD"}
    assert "$$REDIS_PASSWORD" in " ".join(redis["command"])
    # One PostgreSQL user and password for the instance, MLflow and the server itself.
    pg = services["postgres"]["environment"]
    env = services["code-server"]["environment"]
    assert pg["POSTGRES_USER"] == env["LEVIBOT_PG_USER"]
    assert pg["POSTGRES_PASSWORD"] == env["LEVIBOT_PG_PASSWORD"]
    assert pg["POSTGRES_DB"] == env["LEVIBOT_PG_DB"]


def test_mlflow_server_keeps_runs_in_postgres_and_serves_artifacts_from_the_bucket():
    services = _compose()["services"]
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    assert command[command.index("--artifacts-destination") + 1] == "s3://levibot/mlartifacts"
    uri = _interpolate(
        mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"], {"LEVIBOT_PG_PASSWORD": "pw"}
    )
    assert uri == "postgresql+psycopg2://levibot:pw@postgres:5432/levibot_mlflow"
    # The databases the loopback stack creates: POSTGRES_DB, and the init script's.
    init = services["postgres"]["volumes"][1].split(":")[0]
    created = re.findall(r"CREATE DATABASE (\w+);", (CLUSTER / init).read_text())
    assert {services["postgres"]["environment"]["POSTGRES_DB"], *created} == set(stack.DATABASES)
    # Clients in the other containers reach it as mlflow:5000 (its Host-header check).
    assert "mlflow:5000" in mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "5000:5000" in mlflow["ports"][0]


def test_dagster_services_share_the_code_server_location():
    services = _compose()["services"]
    code = services["code-server"]["command"]
    port = code[code.index("-p") + 1]
    name = code[code.index("--location-name") + 1]
    laptop = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]
    assert name == laptop["python_module"]["location_name"]  # runs and schedules keep names
    assert code[code.index("-m") + 1] == laptop["python_module"]["module_name"]
    for svc in ("dagster-webserver", "dagster-daemon"):
        command = services[svc]["command"]
        path = command[command.index("-w") + 1]
        workspace = yaml.safe_load(
            (CLUSTER / path.removeprefix("/app/deploy/cluster/")).read_text()
        )
        assert workspace["load_from"] == [
            {"grpc_server": {"host": "code-server", "port": int(port), "location_name": name}}
        ]


def test_the_image_holds_every_file_the_services_name():
    """Paths under /app in the compose commands are in the image: a Dockerfile COPY brings
    them (relative to the repository root)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    text = (CLUSTER / "docker-compose.yml").read_text()
    inside = set(re.findall(r"/app/([\w./-]+)", text))
    assert inside
    for rel in inside:
        assert (ROOT / rel).exists(), rel
        assert any(rel == src or rel.startswith(src.rstrip("/") + "/") for src in copied), rel


def test_prometheus_scrapes_the_api_service_as_the_single_host_setup_scrapes_the_host():
    services = _compose()["services"]
    mounts = [v.rsplit(":", 2) for v in services["prometheus"]["volumes"] if v.endswith(":ro")]
    volumes = {target: source for source, target, _ in mounts}
    cluster = yaml.safe_load((CLUSTER / volumes["/etc/prometheus/prometheus.yml"]).read_text())
    single = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert cluster["scrape_configs"][0]["static_configs"] == [{"targets": ["api:8000"]}]
    for config in (cluster, single):
        del config["scrape_configs"][0]["static_configs"]
    assert cluster == single
    assert (CLUSTER / volumes["/etc/prometheus/alerts.yml"]).resolve() == (
        ROOT / "deploy" / "prometheus" / "alerts.yml"
    )
    grafana = services["grafana"]["volumes"]
    assert "../grafana/provisioning:/etc/grafana/provisioning:ro" in grafana


def test_every_compose_input_is_documented_in_the_readme():
    text = (CLUSTER / "docker-compose.yml").read_text()
    inputs = {m.group(1) for m in INTERPOLATION.finditer(text)}
    readme = (CLUSTER / "README.md").read_text()
    section = readme.split("## Docker Compose", 1)[1].split("\n## ", 1)[0]
    missing = {name for name in inputs if f"`{name}`" not in section}
    assert not missing, missing
    # A host variable named LEVIBOT_* is the project's own variable of that name.
    project = set(VARIABLES) | _dagster_yaml_env_names()
    assert {n for n in inputs if n.startswith("LEVIBOT_")} <= project
