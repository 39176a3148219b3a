"""The seed's `docker compose up -d --build api`: the compose file's `api` service builds the
repository's Dockerfile and runs `levibot serve` with the token required. (Docker itself is not
available where the tests run: this checks the files, the image is for users.)"""

import re
import tomllib
from pathlib import Path

import yaml

from levibot_pipelines.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_the_compose_api_service_builds_the_dockerfile_and_serves_with_a_token():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    api = compose["services"]["api"]
    assert (ROOT / "deploy" / api["build"]["context"] / api["build"]["dockerfile"]).resolve() == (
        ROOT / "Dockerfile"
    )
    assert api["command"][:2] == ["levibot", "serve"]
    build_parser().parse_args(api["command"][1:])  # a command the CLI accepts
    assert api["environment"]["LEVIBOT_API_TOKEN"].startswith("${LEVIBOT_API_TOKEN:?")
    assert api["environment"]["LEVIBOT_HOME"] == "/data/levibot"
    assert any(v.endswith(":/data/levibot") for v in api["volumes"])


def test_the_dockerfile_installs_the_project_with_cpu_torch_and_serves():
    text = (ROOT / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in text
    assert "pip install" in text and "COPY levibot_pipelines" in text
    assert 'CMD ["levibot", "serve", "--host", "0.0.0.0", "--port", "8000"]' in text
    assert "LEVIBOT_HOME=/data/levibot" in text


def test_the_dockerfile_builds_cuda_torch_by_build_argument_and_holds_the_cluster_files():
    """One image for the API, the code server and the workers: ``--build-arg TORCH_INDEX=...``
    picks the torch build (CPU by default), ``BASE`` the base image; the cluster's packages come
    with the project's dependencies and its files are copied in."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    (base,) = [line for line in lines if line.startswith("ARG BASE=")]
    (frm,) = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert lines.index(base) < frm and lines[frm] == "FROM ${BASE}"
    assert base == "ARG BASE=python:3.11-slim"
    # Declared after FROM, or the build stage would not see it.
    (torch,) = [i for i, line in enumerate(lines) if line.startswith("ARG TORCH_INDEX=")]
    assert torch > frm
    assert lines[torch] == "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu"
    (install,) = [line for line in lines if "pip install" in line]
    assert '--extra-index-url "$TORCH_INDEX" .' in install
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert {"levibot_pipelines", "deploy/cluster", "pyproject.toml"} <= copied
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0] for dep in deps}
    assert {"dagster-celery", "dagster-postgres", "boto3", "redis", "mlflow"} <= names
    env = " ".join(lines)
    assert "LEVIBOT_HOME=/data/levibot" in env and "DAGSTER_HOME=/data/levibot/dagster" in env
