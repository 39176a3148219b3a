"""The seed's `docker compose up -d --build api`: the compose file's `api` service builds the
repository's Dockerfile and runs `levibot serve` with the token required. (Docker itself is not
available where the tests run: this checks the files, the image is for users.)"""

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
