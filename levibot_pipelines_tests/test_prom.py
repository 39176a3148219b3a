"""Prometheus conventions of ``/metrics/prom`` and of the rules in deploy/: the real endpoint's
text passes ``promtool check metrics``, the API counts requests by route template on a registry of
its own, state metrics have ``_info`` twins, and ages are computed by the rules from timestamps
(so a frozen Pushgateway value still fires the stale-data alert)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from levibot_pipelines.adapters.prediction_files import LatestPredictions, write_published
from levibot_pipelines.adapters.prom import METRIC_NAMES, push_metrics, render_metrics
from levibot_pipelines.api import create_app
from levibot_pipelines.api_metrics import API_METRIC_NAMES, UNMATCHED
from levibot_pipelines.core.data.timeframes import last_closed_bar
from levibot_pipelines.settings import Settings
from levibot_pipelines_tests.test_api import serving
from levibot_pipelines_tests.test_prediction_files import (
    SYMBOLS,
    TF_MS,
    make_row,
    make_rows,
    tiny_deep_files,
)

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not on PATH (Debian: apt-get install --no-install-recommends prometheus; "
    ".ci/run installs it)",
)


@pytest.fixture(scope="module")
def published_home(tmp_path_factory) -> Path:
    """A home with one published row per symbol at the newest closed bar (healthy now)."""
    home = tmp_path_factory.mktemp("prom_home")
    now = int(time.time() * 1000)
    rows = make_rows(bar_time=last_closed_bar(now, TF_MS), published_at=now)
    files = tiny_deep_files("BTCUSDT")
    write_published(home, rows, {s: {**files, **_meta(s)} for s in SYMBOLS})
    return home


def _meta(symbol: str) -> dict[str, bytes]:
    return {"meta.json": tiny_deep_files(symbol)["meta.json"]}


def scrape(base: str) -> dict:
    """``/metrics/prom`` parsed: family name -> family (a counter's name without ``_total``)."""
    r = requests.get(f"{base}/metrics/prom", timeout=10)
    assert r.status_code == 200, r.text
    return {f.name: f for f in text_string_to_metric_families(r.text)}


@needs_promtool
def test_served_metrics_pass_promtool_check_metrics(published_home):
    with serving(create_app(Settings(home=published_home))) as base:
        requests.get(f"{base}/ml/predict", params={"symbol": "BTCUSDT"}, timeout=10)
        requests.get(f"{base}/no/such/path", timeout=10)
        text = requests.get(f"{base}/metrics/prom", timeout=10).text
    for name in (*METRIC_NAMES, *API_METRIC_NAMES, "process_cpu_seconds_total"):
        assert f"# TYPE {name} " in text, name
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


@needs_promtool
def test_alert_rules_pass_promtool_check_rules():
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: " in done.stdout and " rules found" in done.stdout, done.stdout


def test_requests_are_counted_by_route_template_per_app(published_home):
    with serving(create_app(Settings(home=published_home))) as base:
        for symbol in ("BTCUSDT", "btc/usdt", "XRPUSDT"):  # 200, 200, 404 (unknown symbol)
            requests.get(f"{base}/ml/predict", params={"symbol": symbol}, timeout=10)
        requests.get(f"{base}/no/such/path?x=1", timeout=10)  # no route: one label value
        requests.head(f"{base}/healthz", timeout=10)
        requests.request("PROPFIND", f"{base}/healthz", timeout=10)  # 405, an unlisted method
        fam = scrape(base)
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in fam["levibot_api_requests"].samples
        if s.name == "levibot_api_requests_total"
    }
    assert counts == {
        ("GET", "/ml/predict", "200"): 2,
        ("GET", "/ml/predict", "404"): 1,
        ("GET", UNMATCHED, "404"): 1,
        ("HEAD", "/healthz", "200"): 1,
        ("OTHER", "/healthz", "405"): 1,
    }
    hist = {
        (s.name, s.labels.get("le")): s.value
        for s in fam["levibot_api_request_duration_seconds"].samples
        if s.labels["route"] == "/ml/predict"
    }
    assert hist[("levibot_api_request_duration_seconds_count", None)] == 3
    assert hist[("levibot_api_request_duration_seconds_bucket", "+Inf")] == 3
    assert 0 < hist[("levibot_api_request_duration_seconds_sum", None)] < 30
    # A second app in the same process has a registry of its own: nothing counted yet.
    with serving(create_app(Settings(home=published_home))) as other:
        assert scrape(other)["levibot_api_requests"].samples == []


@pytest.mark.skipif(sys.platform != "linux", reason="ProcessCollector reads /proc (Linux only)")
def test_process_metrics_are_served(published_home):
    before = time.time()
    with serving(create_app(Settings(home=published_home))) as base:
        fam = scrape(base)
    assert fam["process_resident_memory_bytes"].samples[0].value > 10 * 2**20
    assert fam["process_cpu_seconds"].samples[0].value > 0  # process_cpu_seconds_total
    assert fam["process_start_time_seconds"].samples[0].value <= before
    assert fam["python_info"].samples[0].labels["implementation"]


def _latest(**kw) -> LatestPredictions:
    rows = {s: make_row(s, **kw) for s in SYMBOLS}
    return LatestPredictions(published_at=rows["BTCUSDT"]["published_at"], rows=rows)


def _families(text: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def _by(fam: dict, name: str, *labels: str) -> dict:
    return {tuple(s.labels[k] for k in labels): s.value for s in fam[name].samples}


def test_state_info_metrics_and_unit_names():
    # bar_time 0 -> bar close 900 s; published at 960 s.
    fam = _families(render_metrics(_latest(bar_time=0, published_at=960_000), SYMBOLS, 1_000_000))
    assert set(fam) == set(METRIC_NAMES)
    assert _by(fam, "levibot_ml_signal_info", "symbol", "signal") == {
        ("BTCUSDT", "ENTRY_LONG"): 1,
        ("ETHUSDT", "HOLD"): 1,
        ("SOLUSDT", "EXIT"): 1,
    }
    assert _by(fam, "levibot_ml_regime_info", "symbol", "regime") == {
        ("BTCUSDT", "trend"): 1,
        ("ETHUSDT", "neutral"): 1,
        ("SOLUSDT", "meanrev"): 1,
    }
    assert _by(fam, "levibot_kill_switch_info", "state") == {("ACTIVE",): 1}
    assert _by(fam, "levibot_paper_drawdown_ratio", "symbol") == {
        ("BTCUSDT",): 0.0,
        ("ETHUSDT",): 0.01,
        ("SOLUSDT",): 0.02,
    }
    assert "levibot_paper_drawdown" not in fam
    assert "price of one BTC in ETH" in fam["levibot_ml_cross_asset_ratio"].documentation
    halted = _families(render_metrics(_latest(), SYMBOLS, 1_000_000, kill_switch="HALTED"))
    assert _by(halted, "levibot_kill_switch_info", "state") == {("HALTED",): 1}
    assert halted["levibot_kill_switch_state"].samples[0].value == 2


def test_pushed_timestamps_do_not_depend_on_the_push_time():
    bodies: list[str] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 (http.server's naming)
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    gateway = HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{gateway.server_port}"
    latest = _latest(bar_time=0, published_at=960_000)
    try:
        for now_ms in (1_000_000, 4_600_000):  # pushed 100 s and 1 h 3 min 40 s after the close
            assert push_metrics(url, latest, SYMBOLS, now_ms=now_ms) is True
    finally:
        gateway.shutdown()
    early, late = (_families(body.encode()) for body in bodies)
    for fam in (early, late):
        close = _by(fam, "levibot_ml_last_bar_close_timestamp_seconds", "symbol")
        assert set(close.values()) == {900.0}
        assert fam["levibot_predictions_published_timestamp_seconds"].samples[0].value == 960.0
    # The ages are those at push time: a gateway would serve them unchanged forever.
    assert set(_by(early, "levibot_data_lag_seconds", "symbol").values()) == {100.0}
    assert set(_by(late, "levibot_data_lag_seconds", "symbol").values()) == {3700.0}


RULE_TEST = """
rule_files: [{alerts}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # Pushed once at t=0 and never again: the bar closed at 0 s, published at 30 s.
      - series: 'levibot_ml_last_bar_close_timestamp_seconds{{symbol="BTCUSDT"}}'
        values: '0x60'
      - series: 'levibot_predictions_published_timestamp_seconds'
        values: '30x60'
      # A live pipeline: each minute the newest bar closed 5 minutes ago.
      - series: 'levibot_ml_last_bar_close_timestamp_seconds{{symbol="ETHUSDT"}}'
        values: '-300+60x60'
    alert_rule_test:
      - eval_time: 34m
        alertname: LevibotDataStale
        exp_alerts: []
      - eval_time: 40m
        alertname: LevibotDataStale
        exp_alerts:
          - exp_labels: {{severity: critical, symbol: BTCUSDT}}
            exp_annotations:
              summary: "BTCUSDT: newest predicted bar closed 40m 0s ago"
              description: "{stale_description}"
      - eval_time: 40m
        alertname: LevibotPredictionOld
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations:
              summary: "latest prediction published 39m 30s ago"
              description: "{old_description}"
"""


@needs_promtool
def test_stale_alerts_fire_on_frozen_pushed_timestamps(tmp_path):
    """With the Pushgateway every value stays as pushed: the rules still see the data age,
    because they compute it as time() - timestamp (the old lag gauges would stay near 0)."""
    spec = tmp_path / "alerts_test.yml"
    rules = {
        r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    }
    spec.write_text(
        RULE_TEST.format(
            alerts=ALERTS,
            stale_description=rules["LevibotDataStale"]["annotations"]["description"],
            old_description=rules["LevibotPredictionOld"]["annotations"]["description"],
        )
    )
    yaml.safe_load(spec.read_text())  # the spec itself is valid YAML
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(spec)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
