"""The monitoring set-up under deploy/: published ports on loopback only, no literal passwords,
Prometheus sending the API's bearer token."""

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_every_published_port_is_bound_to_loopback():
    services = _compose()["services"]
    ports = [(name, p) for name, svc in services.items() for p in svc.get("ports", [])]
    assert {name for name, _ in ports} == {"prometheus", "grafana"}
    for name, port in ports:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)


def test_grafana_password_comes_from_the_environment():
    env = _compose()["services"]["grafana"]["environment"]
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?"), password
    # deploy/ is a package (deploy.cluster.stack): its bytecode caches are not docs.
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    docs = files + [DEPLOY.parent / "README.md"]
    text = "\n".join(p.read_text() for p in docs)
    assert "admin / admin" not in text and "admin/admin" not in text
    assert "GF_SECURITY_ADMIN_PASSWORD: admin" not in text


def test_prometheus_sends_the_api_token_from_a_secret():
    compose = _compose()
    assert compose["secrets"]["levibot_api_token"] == {"environment": "LEVIBOT_API_TOKEN"}
    assert "levibot_api_token" in compose["services"]["prometheus"]["secrets"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = scrape["scrape_configs"][0]
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/run/secrets/levibot_api_token",
    }
