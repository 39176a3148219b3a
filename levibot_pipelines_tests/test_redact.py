"""Secrets never reach a log line or a printout: ``adapters.redact`` and the places that output
the webhook URL, the Pushgateway URL and the MLflow tracking URI."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from levibot_pipelines.adapters.alerts import post_alert
from levibot_pipelines.adapters.prom import push_metrics
from levibot_pipelines.adapters.redact import redact_text, redact_url
from levibot_pipelines.cli import model_summary
from levibot_pipelines.settings import Settings

TOKEN = "abcdefghijklmnopqrstuvwx"
SLACK = f"https://hooks.slack.com/services/T000/B000/{TOKEN}"

# Hand-checked: (input, redacted).
TABLE = [
    (SLACK, "https://hooks.slack.com/services/T000/B000/***"),
    ("https://user:pw@host:8443/a?key=v&x=1#top", "https://***@host:8443/a?key=***&x=***#top"),
    ("http://user:secret@127.0.0.1:9091", "http://***@127.0.0.1:9091"),
    ("http://token@gateway:9091/", "http://***@gateway:9091/"),
    ("postgresql://u:secret@db.internal:5432/mlflow", "postgresql://***@db.internal:5432/mlflow"),
    # a database URI keeps its (long) database name: only HTTP paths carry tokens
    ("postgresql://u:p@h/levibot_mlflow_production", "postgresql://***@h/levibot_mlflow_production"),
    ("mysql+pymysql://u:p@h/db?password=x", "mysql+pymysql://***@h/db?password=***"),
    ("sqlite:////tmp/some_long_directory_name/mlflow.db", "sqlite:////tmp/some_long_directory_name/mlflow.db"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("http://127.0.0.1:5000/#/experiments/1/runs/0123456789abcdef0123456789abcdef",
     "http://127.0.0.1:5000/#/experiments/1/runs/0123456789abcdef0123456789abcdef"),
    ("https://discord.com/api/webhooks/123456789012345678/aB-c_D" + "x" * 60,
     "https://discord.com/api/webhooks/***/***"),
    ("https://api.example.com/v3?apiKey=K1&signature=S", "https://api.example.com/v3?apiKey=***&signature=***"),
    ("https://host/cb#access_token=abc&state=1", "https://host/cb#access_token=***&state=***"),
    ("http://[::1", "***"),
    ("", ""),
    (None, None),
]  # fmt: skip


@pytest.mark.parametrize(("url", "expected"), TABLE)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_text_hides_known_secrets_quoted_in_pieces():
    message = (
        "HTTPConnectionPool(host='hooks.slack.com', port=443): Max retries exceeded with url: "
        f"/services/T000/B000/{TOKEN} (Caused by ...); see http://u:pw@other/x?k=v"
    )
    out = redact_text(message, SLACK)
    assert TOKEN not in out and "pw" not in out and "k=v" not in out
    assert "/services/T000/B000/***" in out and "http://***@other/x?k=***" in out
    assert redact_text("user secret failed", "http://user:secret@h") == "*** *** failed"
    assert redact_text("nothing here", None, "") == "nothing here"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Hook:
    """A loopback webhook that answers every POST with ``status``."""

    def __init__(self, status: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(status)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/{TOKEN}"


def _logged(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [204, 500])
def test_a_webhook_post_logs_no_token(monkeypatch, caplog, status):
    monkeypatch.setenv("LEVIBOT_ALERT_WEBHOOK", SLACK)
    hook = Hook(status)
    caplog.set_level(logging.DEBUG, logger="levibot_pipelines")
    try:
        delivered = post_alert(hook.url, {"state": "FAIL", "message": "features are stale"})
    finally:
        hook.server.shutdown()
    assert delivered is (status == 204)
    assert "features are stale" in _logged(caplog)
    assert TOKEN not in _logged(caplog)


def test_an_unreachable_webhook_logs_no_token(caplog):
    url = f"http://127.0.0.1:{_free_port()}/services/T000/B000/{TOKEN}?channel=ops"
    caplog.set_level(logging.DEBUG, logger="levibot_pipelines")
    assert post_alert(url, {"state": "WARN", "message": "m"}) is False
    text = _logged(caplog)
    assert "alert webhook" in text and "failed" in text
    assert TOKEN not in text and "ops" not in text


def test_an_unreachable_pushgateway_logs_no_password(caplog):
    url = f"http://user:secret@127.0.0.1:{_free_port()}"
    caplog.set_level(logging.DEBUG, logger="levibot_pipelines")
    assert push_metrics(url, None, ["BTCUSDT"], now_ms=1_000) is False
    text = _logged(caplog)
    assert "push to http://***@127.0.0.1" in text
    assert "secret" not in text and "user:" not in text


def test_model_summary_prints_no_tracking_password(tmp_path):
    env = {
        "LEVIBOT_HOME": str(tmp_path),
        "LEVIBOT_MLFLOW_TRACKING_URI": "postgresql://u:secret@127.0.0.1/mlflow",
    }
    text = model_summary(Settings.from_env(env=env))
    assert "MLflow store postgresql://***@127.0.0.1/mlflow" in text
    assert "secret" not in text


def test_the_code_location_shows_no_secret(monkeypatch, tmp_path):
    """What the Dagster UI shows of the resources: the webhook as an ``EnvVar`` reference, the
    Settings-holding resources without config, so no secret value in the repository snapshot."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    from levibot_pipelines.definitions import load_definitions

    for name, value in {
        "LEVIBOT_HOME": str(tmp_path),
        "LEVIBOT_ALERT_WEBHOOK": SLACK,
        "LEVIBOT_MLFLOW_TRACKING_URI": "postgresql://u:secret@127.0.0.1/mlflow",
        "LEVIBOT_MLFLOW_UI": "http://ui:secret@127.0.0.1:5000",
        "LEVIBOT_PUSHGATEWAY_URL": "http://user:secret@127.0.0.1:9091",
        "LEVIBOT_EXCHANGE_API_URL": "https://k:secret@api.example.com",
    }.items():
        monkeypatch.setenv(name, value)
    repo = load_definitions().get_repository_def()
    snap = RepositorySnap.from_def(repo)
    configured = {r.name: r.configured_values for r in snap.resources}
    assert configured["alerts"]["webhook_url"].name == "LEVIBOT_ALERT_WEBHOOK"
    assert configured["models"] == configured["market"] == configured["trading"] == {}
    text = serialize_value(snap)
    assert "secret" not in text and TOKEN not in text


def test_redact_text_leaves_short_query_values_in_free_text():
    url = "https://h/v3?page=1&apiKey=abcd1234"
    out = redact_text("retry 1 of 3 for /v3?page=1&apiKey=abcd1234", url)
    assert out == "retry 1 of 3 for /v3?page=***&apiKey=***"  # the quoted query, whole
    assert redact_text("key abcd1234 rejected, page 1", url) == "key *** rejected, page 1"
