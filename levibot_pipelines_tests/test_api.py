"""The HTTP API against a real uvicorn server on loopback, the Prometheus rendering, and the
deploy files (dashboard and alert expressions name metrics that are actually emitted)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import requests
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from levibot_pipelines.adapters.exported_model import load_exported_transformer
from levibot_pipelines.adapters.home import exported_transformer_dir, published_dir
from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.adapters.prediction_files import LatestPredictions, write_published
from levibot_pipelines.adapters.prom import (
    KILL_SWITCH_CODES,
    METRIC_NAMES,
    SIGNAL_CODES,
    push_metrics,
    render_metrics,
)
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.api import create_app, normalize_symbol
from levibot_pipelines.core.data.features import FEATURE_COLUMNS, build_features
from levibot_pipelines.core.data.timeframes import last_closed_bar
from levibot_pipelines.core.data.windows import window_ends
from levibot_pipelines.core.models.inference import transformer_confidence
from levibot_pipelines.core.models.transformer_training import predict
from levibot_pipelines.settings import ModelSettings, Settings, TradingSettings
from levibot_pipelines_tests.conftest import synthetic_long
from levibot_pipelines_tests.test_prediction_files import (
    SYMBOLS,
    TF_MS,
    TINY,
    make_row,
    make_rows,
    tiny_deep_files,
    tiny_model,
)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
N_BARS = 230  # 200 warm-up bars -> 31 feature rows per symbol, enough for an 8-bar window


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_home(home: Path) -> dict:
    """Under ``home``: features whose newest bar is the newest closed bar now, and a tiny
    exported model per symbol (nothing published yet)."""
    newest = last_closed_bar(int(time.time() * 1000), TF_MS)
    bars = synthetic_long(N_BARS, start_ms=newest - (N_BARS - 1) * TF_MS)
    features = build_features(bars, tf_ms=TF_MS, horizon=1)
    ParquetStore(home).write_features(features)
    model = tiny_model()
    X = features.select(FEATURE_COLUMNS).to_numpy()
    model.set_scaling(X.mean(axis=0), X.std(axis=0), 0.003)
    files = tiny_deep_files("BTCUSDT", model=model)
    models = {s: {**files, "meta.json": tiny_deep_files(s)["meta.json"]} for s in SYMBOLS}
    return {"home": home, "bar_time": newest, "models": models, "features": features}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> dict:
    return build_home(tmp_path_factory.mktemp("api_home"))


def publish(home: dict, **kw) -> dict[str, dict]:
    """(Re)publish one row per symbol at ``home["bar_time"]`` with overrides ``kw``."""
    now = int(time.time() * 1000)
    rows = make_rows(**{"bar_time": home["bar_time"], "published_at": now, **kw})
    write_published(home["home"], rows, home["models"])
    return {r["symbol"]: r for r in rows.to_dicts()}


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a loopback port the OS picks; yields its base URL and
    stops the server on exit (also when the body fails)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start within 20 s"
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def server(home):
    settings = Settings(home=home["home"], models=ModelSettings(mc_samples=5, precision="fp32"))
    with serving(create_app(settings)) as base:
        yield base


@pytest.fixture
def api(home, server):
    """Each test starts from a fresh publish and no kill-switch file."""
    (home["home"] / "kill_switch.json").unlink(missing_ok=True)
    rows = publish(home)
    return server, rows


def get(base: str, path: str, **params) -> requests.Response:
    return requests.get(f"{base}{path}", params=params, timeout=30)


def test_import_loads_no_torch_dagster_or_duckdb():
    code = (
        "import sys, levibot_pipelines.api\n"
        "print(sorted(m for m in ('torch', 'dagster', 'duckdb', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_normalize_symbol():
    for raw in ("BTCUSDT", "BTC/USDT", "btcusdt", " btc-usdt "):
        assert normalize_symbol(raw) == "BTCUSDT"


def test_predict_endpoints_serve_the_published_row(api, home):
    base, rows = api
    for symbol in SYMBOLS:
        row = rows[symbol]
        deep = get(base, "/ml/predict_deep", symbol=symbol).json()
        assert deep["model_type"] == "transformer_mc_dropout" and deep["recomputed"] is False
        assert deep["p_up"] == row["deep_p_up"] and deep["mu"] == row["deep_mu"]
        # The seed's types: uncertainty a number (the total predictive std), parts beside it.
        assert type(deep["uncertainty"]) is float and deep["uncertainty"] == row["deep_sigma"]
        assert deep["uncertainty_parts"] == {
            "total": row["deep_sigma"],
            "aleatoric": row["deep_aleatoric"],
            "epistemic": row["deep_epistemic"],
            "epistemic_p": row["deep_epistemic_p"],
        }
        assert deep["confidence"] == row["deep_confidence"] and deep["mc_samples"] == 5
        # Published ENTRY_LONG / HOLD (flat) / EXIT (no earlier bar held a position).
        assert (deep["signal"], deep["side"]) == SEED_SIGNALS[symbol]
        assert deep["model_version"] == "3" and deep["position"] == row["position"]
        assert deep["bar_time"] == home["bar_time"] and deep["source"] == "synthetic"
        assert (deep["size"], deep["stop_loss"], deep["take_profit"]) == (
            row["size"],
            row["stop_loss"],
            row["take_profit"],
        )
        assert deep["regime"] == row["regime"] and deep["kill_switch"] == "ACTIVE"
        # 0 while bar_time is the newest closed bar; a few seconds if a bar closed mid-test
        assert deep["stale"] is False and 0.0 <= deep["staleness_minutes"] < 1.0

        ens = get(base, "/ml/predict_ensemble", symbol=symbol).json()
        assert ens["model_type"] == "ensemble" and ens["p_up"] == row["ensemble_p_up"]
        assert ens["confidence"] == row["ensemble_confidence"] and ens["w_lgbm"] == 0.4
        assert ens["model_version"] == "lgbm v2 + deep v3" and ens["uncertainty_source"] == "blend"
        assert ens["uncertainty"] == deep["uncertainty"]
        assert ens["uncertainty_parts"] == deep["uncertainty_parts"]
        assert (ens["signal"], ens["side"]) == SEED_SIGNALS[symbol]
        # The decision engine's policy: its model, horizon, expected net return (bps in the
        # file, a fraction here) and reason.
        assert (ens["decision_model"], ens["horizon"]) == (row["decision_model"], row["horizon"])
        assert ens["reason"] == row["decision_reason"]
        net = row["expected_net_bps"]
        assert ens["expected_net_return"] == (None if net is None else pytest.approx(net * 1e-4))

        lgbm = get(base, "/ml/predict", symbol=symbol).json()
        assert lgbm["model_type"] == "lightgbm_calibrated" and lgbm["p_up"] == row["lgbm_p_up"]
        assert lgbm["uncertainty"] is None and lgbm["uncertainty_parts"] is None
        assert (
            lgbm["model_version"] == "2" and (lgbm["signal"], lgbm["side"]) == SEED_SIGNALS[symbol]
        )
    # bar_time + 15 min, as ISO UTC
    close = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((home["bar_time"] + TF_MS) / 1000))
    assert deep["as_of"] == f"{close}.000Z"


SEED_SIGNALS = {"BTCUSDT": ("ENTRY", "long"), "ETHUSDT": ("HOLD", None), "SOLUSDT": ("EXIT", None)}
PREDICTION_ROUTES = ("/ml/predict_deep", "/ml/predict_ensemble", "/ml/predict")


@pytest.mark.parametrize(
    ("w_lgbm", "source"), [(0.0, "deep"), (0.4, "blend"), (0.999, "blend"), (1.0, "lgbm")]
)
def test_uncertainty_source_follows_the_effective_weights(api, home, w_lgbm, source):
    base, _ = api
    rows = publish(home, w_lgbm=w_lgbm)
    body = get(base, "/ml/predict_ensemble", symbol="ETHUSDT").json()
    assert (body["w_lgbm"], body["uncertainty_source"]) == (w_lgbm, source)
    # Whatever the weights, the number is the Transformer member's total predictive std.
    assert body["uncertainty"] == rows["ETHUSDT"]["deep_sigma"] == 0.006


def test_uncertainty_source_rejects_a_weight_outside_0_1():
    from levibot_pipelines.api_responses import uncertainty_source

    assert [uncertainty_source(w) for w in (0.0, 1e-12, 0.5, 1.0)] == [
        "deep",
        "blend",
        "blend",
        "lgbm",
    ]
    with pytest.raises(ValueError, match="w_lgbm must be in \\[0, 1\\], got 1.5"):
        uncertainty_source(1.5)


@pytest.mark.parametrize("path", PREDICTION_ROUTES)
@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_shadow_is_404_until_a_challenger_is_published(api, path, value):
    base, _ = api
    r = get(base, path, symbol="BTCUSDT", shadow=value)
    assert r.status_code == 404, r.text
    assert r.json()["detail"].startswith("no shadow challenger is published for BTCUSDT")
    assert requests.head(f"{base}{path}?symbol=BTCUSDT&shadow=1", timeout=30).status_code == 404


@pytest.mark.parametrize("path", PREDICTION_ROUTES)
def test_shadow_false_is_the_champion(api, path):
    base, _ = api
    champion = get(base, path, symbol="BTCUSDT").json()
    for value in ("0", "false"):
        r = get(base, path, symbol="BTCUSDT", shadow=value)
        assert r.status_code == 200 and r.json() == champion
    assert get(base, path, symbol="BTCUSDT", shadow="maybe").status_code == 422


@pytest.mark.parametrize(
    ("path", "unknown", "accepted"),
    [
        ("/ml/predict_deep", "sample", "symbol, n_samples, shadow"),
        ("/ml/predict_ensemble", "n_samples", "symbol, shadow"),
        ("/ml/predict", "canary", "symbol, shadow"),
        ("/ml/models/deep/status", "symbol", "none"),
        ("/metrics/prom", "format", "none"),
        ("/healthz", "verbose", "none"),
        ("/livez", "verbose", "none"),
    ],
)
def test_unknown_query_parameters_are_422_naming_them(api, path, unknown, accepted):
    base, _ = api
    params = (
        {"symbol": "BTCUSDT", unknown: "7"} if path.startswith("/ml/predict") else {unknown: "7"}
    )
    r = get(base, path, **params)
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert (error["type"], error["loc"], error["input"]) == (
        "extra_forbidden",
        ["query", unknown],
        "7",
    )
    assert error["msg"] == f"unknown query parameter {unknown!r}; {path} accepts: {accepted}"


def test_every_unknown_query_parameter_is_named(api):
    base, _ = api
    r = get(base, "/ml/predict_deep", symbol="BTCUSDT", foo="1", bar="2")
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["query", "foo"], ["query", "bar"]]


def test_livez_is_alive_while_halted_or_unpublished_and_healthz_is_not(api, home):
    base, _ = api
    KillSwitch(home["home"]).engage("HALTED", "exchange outage", by="ops")
    assert get(base, "/healthz").status_code == 503
    live = get(base, "/livez")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert requests.head(f"{base}/livez", timeout=30).status_code == 200
    (published_dir(home["home"]) / "latest_predictions.json").unlink()
    assert get(base, "/healthz").status_code == 503
    assert get(base, "/livez").status_code == 200


def test_symbol_spellings_and_unknown_symbol(api):
    base, rows = api
    for raw in ("BTCUSDT", "BTC/USDT", "btcusdt"):
        body = get(base, "/ml/predict_ensemble", symbol=raw).json()
        assert body["symbol"] == "BTCUSDT" and body["p_up"] == rows["BTCUSDT"]["ensemble_p_up"]
    r = get(base, "/ml/predict", symbol="DOGEUSDT")
    assert r.status_code == 404
    assert "DOGEUSDT" in r.json()["detail"] and "BTCUSDT, ETHUSDT, SOLUSDT" in r.json()["detail"]


@pytest.mark.parametrize("n_samples", ["0", "1001", "abc", "-3", "2.5"])
def test_bad_n_samples_is_422(api, n_samples):
    base, _ = api
    assert get(base, "/ml/predict_deep", symbol="BTCUSDT", n_samples=n_samples).status_code == 422


def test_missing_symbol_is_422(api):
    base, _ = api
    assert get(base, "/ml/predict_ensemble").status_code == 422


def test_n_samples_equal_to_published_is_not_recomputed(api):
    base, rows = api
    body = get(base, "/ml/predict_deep", symbol="BTCUSDT", n_samples=5).json()
    assert body["recomputed"] is False and body["p_up"] == rows["BTCUSDT"]["deep_p_up"]


def test_other_n_samples_reruns_mc_dropout_on_the_exported_model(api, home):
    base, rows = api
    first = get(base, "/ml/predict_deep", symbol="btc/usdt", n_samples=7)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["recomputed"] is True and body["mc_samples"] == 7
    assert 0.0 <= body["p_up"] <= 1.0 and body["p_up"] != rows["BTCUSDT"]["deep_p_up"]
    again = get(base, "/ml/predict_deep", symbol="BTCUSDT", n_samples=7).json()
    assert again == body
    # The same computation done here, independently of the server.
    model, calibrator, _ = load_exported_transformer(home["home"], "BTCUSDT")
    feats = home["features"].filter(pl.col("symbol") == "BTCUSDT").sort("timestamp")
    ts = feats["timestamp"].to_numpy()
    ends = window_ends(ts, TINY.window, TF_MS)
    assert ts[ends[-1]] == home["bar_time"]
    X = feats.select(FEATURE_COLUMNS).to_numpy().astype(np.float32)
    mc = predict(model, X, ends[-1:], n_samples=7, seed=0)
    p = calibrator.transform(mc["p_up"])
    assert body["p_up"] == pytest.approx(p[0], abs=1e-12)
    assert body["mu"] == pytest.approx(mc["mu"][0], abs=1e-12)
    total = np.sqrt(mc["aleatoric"][0] + mc["epistemic"][0])
    assert body["uncertainty"] == pytest.approx(total, rel=1e-9)
    assert body["uncertainty_parts"]["total"] == body["uncertainty"]
    expected_conf = transformer_confidence(p, mc["epistemic_p"])[0]
    assert body["confidence"] == pytest.approx(expected_conf, abs=1e-12)


def test_the_recompute_runs_in_the_configured_precision(api, home):
    """``LEVIBOT_PRECISION`` reaches the API's MC recompute (the exported model's precision is
    never saved, so the server sets it): bf16 autocast gives a p_up within bf16's rounding of
    the fp32 one but not the same number; fp32 gives the fp32 computation exactly."""
    from levibot_pipelines.usecases.recompute import TransformerRecomputer

    _, rows = api
    row = rows["BTCUSDT"]
    out = {}
    for precision in ("fp32", "bf16"):
        settings = Settings(
            home=home["home"], models=ModelSettings(mc_samples=5, precision=precision)
        )
        recompute = TransformerRecomputer(settings)
        out[precision] = recompute(row, 7)
        model = recompute.models["BTCUSDT"][1]
        assert model.precision == precision
    served = get(api[0], "/ml/predict_deep", symbol="BTCUSDT", n_samples=7).json()  # fp32
    assert out["fp32"]["p_up"] == pytest.approx(served["p_up"], abs=1e-12)
    assert out["bf16"]["p_up"] == pytest.approx(out["fp32"]["p_up"], abs=0.02)
    assert out["bf16"]["p_up"] != out["fp32"]["p_up"]


def test_recompute_without_model_or_window_is_503(api, home):
    base, _ = api
    # a published bar with no feature row: the window cannot end there
    publish(home, bar_time=home["bar_time"] + TF_MS)
    r = get(base, "/ml/predict_deep", symbol="BTCUSDT", n_samples=9)
    assert r.status_code == 503 and "no gap-free window of 8 feature rows" in r.json()["detail"]
    publish(home)
    moved = exported_transformer_dir(home["home"], "ETHUSDT").with_name("deep-away")
    exported_transformer_dir(home["home"], "ETHUSDT").rename(moved)
    try:
        r = get(base, "/ml/predict_deep", symbol="ETHUSDT", n_samples=9)
        assert r.status_code == 503 and "no exported deep model for ETHUSDT" in r.json()["detail"]
    finally:
        moved.rename(exported_transformer_dir(home["home"], "ETHUSDT"))


def test_no_file_and_corrupt_file_are_503(api, home):
    base, _ = api
    path = published_dir(home["home"]) / "latest_predictions.json"
    good = path.read_text()
    path.unlink()
    r = get(base, "/ml/predict_ensemble", symbol="BTCUSDT")
    assert r.status_code == 503 and r.json()["detail"].startswith("no predictions published yet")
    assert "make demo" in r.json()["detail"]
    health = get(base, "/healthz")
    assert (
        health.status_code == 503 and "no predictions published yet" in health.json()["reasons"][0]
    )
    path.write_text(good[:100])
    r = get(base, "/ml/predict", symbol="BTCUSDT")
    assert r.status_code == 503 and "not valid JSON" in r.json()["detail"]
    assert get(base, "/healthz").status_code == 503
    families = {f.name for f in text_string_to_metric_families(get(base, "/metrics/prom").text)}
    assert families & set(METRIC_NAMES) == {"levibot_predictions_available"}


def test_healthy_then_stale(api, home):
    base, _ = api
    ok = get(base, "/healthz")
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    assert 0.0 <= ok.json()["symbols"]["SOLUSDT"]["staleness_minutes"] < 1.0
    old = home["bar_time"] - 4 * 96 * TF_MS  # four days earlier
    publish(home, bar_time=old)
    before = time.time() * 1000
    body = get(base, "/ml/predict_ensemble", symbol="ETHUSDT").json()
    after = time.time() * 1000
    # staleness = (now - (bar_time + 2 * 15 min)) / 60000, about 4 days = 5760 min
    assert body["stale"] is True
    low, high = ((t - (old + 2 * TF_MS)) / 60_000 for t in (before, after))
    assert low - 0.001 <= body["staleness_minutes"] <= high + 0.001
    assert body["staleness_minutes"] > 5760 - 30
    health = get(base, "/healthz")
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    reasons = health.json()["reasons"]
    assert [r.split(":")[0] for r in reasons] == [f"{s} stale" for s in SYMBOLS]
    assert "limit 30 min" in reasons[0]


def test_missing_symbol_in_the_file_fails_health(api, home):
    base, _ = api
    write_published(home["home"], make_rows(SYMBOLS[:2], bar_time=home["bar_time"]), home["models"])
    health = get(base, "/healthz")
    assert health.status_code == 503
    assert health.json()["reasons"] == ["no published prediction for ['SOLUSDT']"]
    assert get(base, "/ml/predict", symbol="SOLUSDT").status_code == 503


def test_live_kill_switch_overrides_the_published_state(api, home):
    base, _ = api
    switch = KillSwitch(home["home"])
    # 2026-11-24 10:00 UTC: the reason is the one the CLI and the published rows show.
    switch.engage("HALTED", "exchange outage", by="ops", now_ms=1_795_514_400_000)
    health = get(base, "/healthz")
    assert health.status_code == 503
    assert health.json()["reasons"] == [
        "kill-switch HALTED: HALTED by ops at 2026-11-24 10:00 UTC: exchange outage"
    ]
    assert health.json()["kill_switch"]["reason"] == switch.status().reason()
    body = get(base, "/ml/predict", symbol="SOLUSDT").json()
    assert body["kill_switch"] == "HALTED" and "exchange outage" in body["kill_switch_reason"]
    # BTC was published as ENTRY_LONG size 0.5 while ACTIVE: halted since, it is not served.
    btc = get(base, "/ml/predict_ensemble", symbol="BTCUSDT").json()
    assert (btc["signal"], btc["side"], btc["size"], btc["position"]) == ("HOLD", None, 0.0, 0.0)
    assert btc["kill_switch_applied"] is True and btc["stop_loss"] is None
    assert body["kill_switch_applied"] is False  # SOL published EXIT: nothing to cut
    metrics = {f.name: f for f in text_string_to_metric_families(get(base, "/metrics/prom").text)}
    assert metrics["levibot_kill_switch_state"].samples[0].value == 2
    switch.engage("REDUCING", "exchange degraded", by="ops")
    assert get(base, "/healthz").status_code == 200  # reducing sizes is not unhealthy
    btc = get(base, "/ml/predict", symbol="BTCUSDT").json()
    # 0.5 published x the default reducing factor 0.5.
    assert (btc["signal"], btc["side"], btc["size"], btc["kill_switch_applied"]) == (
        "ENTRY",
        "long",
        0.25,
        True,
    )
    status = get(base, "/ml/models/deep/status").json()
    assert status["kill_switch"]["state"] == "REDUCING"


STALE_LIMIT = 45  # minutes: the kill_staleness_minutes of the clocked server below
PREDICT_PATHS = ("/ml/predict_ensemble", "/ml/predict_deep", "/ml/predict")
STALE_REASON = "staleness HALTED: published BTCUSDT bar is 46 min stale (limit 45)"


@pytest.fixture
def clocked(api, home):
    """A second server over the freshly published home whose clock the test sets (ms UTC, in
    ``clock["now"]``), with ``kill_staleness_minutes`` = :data:`STALE_LIMIT`; no daemon runs."""
    clock = {"now": int(time.time() * 1000)}
    settings = Settings(
        home=home["home"],
        models=ModelSettings(mc_samples=5, precision="fp32"),
        trading=TradingSettings(kill_staleness_minutes=STALE_LIMIT),
    )
    with serving(create_app(settings, clock=lambda: clock["now"])) as base:
        yield base, clock


def minutes_stale(home: dict, minutes: float) -> int:
    """The time (ms UTC) at which the published bar is ``minutes`` stale in data time."""
    return home["bar_time"] + 2 * TF_MS + round(minutes * 60_000)


def test_stale_entry_is_cut_by_the_api_itself(clocked, home):
    base, clock = clocked
    clock["now"] = minutes_stale(home, STALE_LIMIT + 1)
    # BTC was published as ENTRY_LONG size 0.5 while ACTIVE; no kill-switch file (daemon down).
    for path in PREDICT_PATHS:
        btc = get(base, path, symbol="BTCUSDT").json()
        assert (btc["signal"], btc["size"], btc["position"]) == ("HOLD", 0.0, 0.0), path
        assert (btc["kill_switch"], btc["kill_switch_applied"]) == ("HALTED", True), path
        assert btc["kill_switch_reason"] == STALE_REASON, path
        assert btc["reason"] == (
            "kill-switch HALTED: no entry (entry: expected net +12.3 bps over 16 bars)"
        ), path
        assert btc["stop_loss"] is None and btc["take_profit"] is None
        assert btc["staleness_minutes"] == STALE_LIMIT + 1 and btc["stale"] is True
    # Only entries are cut: SOL's published EXIT and ETH's HOLD pass unchanged.
    sol = get(base, "/ml/predict", symbol="SOLUSDT").json()
    assert (sol["signal"], sol["kill_switch"], sol["kill_switch_applied"]) == (
        "EXIT",
        "HALTED",
        False,
    )
    eth = get(base, "/ml/predict_ensemble", symbol="ETHUSDT").json()
    assert (eth["signal"], eth["size"], eth["kill_switch_applied"]) == ("HOLD", 0.0, False)
    status = get(base, "/ml/models/deep/status").json()
    assert status["kill_switch"]["state"] == "HALTED"
    assert "46 min stale (limit 45)" in status["kill_switch"]["reason"]
    # The same with a released (ACTIVE) switch file.
    KillSwitch(home["home"]).release(by="ops")
    btc = get(base, "/ml/predict_ensemble", symbol="BTCUSDT").json()
    assert (btc["signal"], btc["kill_switch_reason"]) == ("HOLD", STALE_REASON)
    # Just below the limit nothing is cut.
    clock["now"] = minutes_stale(home, STALE_LIMIT - 0.5)
    for path in PREDICT_PATHS:
        btc = get(base, path, symbol="BTCUSDT").json()
        assert (btc["signal"], btc["side"], btc["size"], btc["position"]) == (
            "ENTRY",
            "long",
            0.5,
            0.5,
        ), path
        assert (btc["kill_switch"], btc["kill_switch_reason"]) == ("ACTIVE", ""), path
        assert btc["kill_switch_applied"] is False
    assert get(base, "/ml/models/deep/status").json()["kill_switch"]["state"] == "ACTIVE"


def test_stale_entry_with_a_live_switch_combines_the_reasons(clocked, home):
    base, clock = clocked
    clock["now"] = minutes_stale(home, STALE_LIMIT + 1)
    switch = KillSwitch(home["home"])
    # A live REDUCING: staleness is stricter, so it comes first and the entry is cut to HOLD.
    switch.set_trigger("drift", "REDUCING", "PSI 0.310 on vol_20 (BTCUSDT)", by="auto:publish")
    btc = get(base, "/ml/predict_ensemble", symbol="BTCUSDT").json()
    assert (btc["signal"], btc["size"], btc["kill_switch"]) == ("HOLD", 0.0, "HALTED")
    assert btc["kill_switch_reason"] == (
        f"{STALE_REASON}; drift REDUCING: PSI 0.310 on vol_20 (BTCUSDT)"
    )
    # A live manual HALTED keeps its own reason, first among equals.
    switch.engage("HALTED", "exchange outage", by="ops", now_ms=1_795_514_400_000)
    btc = get(base, "/ml/predict", symbol="BTCUSDT").json()
    assert (btc["signal"], btc["kill_switch"], btc["kill_switch_applied"]) == (
        "HOLD",
        "HALTED",
        True,
    )
    assert btc["kill_switch_reason"] == (
        f"HALTED by ops at 2026-11-24 10:00 UTC: exchange outage; {STALE_REASON}; "
        "drift REDUCING: PSI 0.310 on vol_20 (BTCUSDT)"
    )
    # Below the limit the live switch alone is served.
    clock["now"] = minutes_stale(home, STALE_LIMIT - 1)
    btc = get(base, "/ml/predict_deep", symbol="BTCUSDT").json()
    assert btc["kill_switch_reason"] == switch.status().reason()


def test_stored_staleness_trigger_is_measured_again_by_the_api(clocked, home):
    base, clock = clocked
    clock["now"] = minutes_stale(home, STALE_LIMIT + 1)
    # The daemon's last word, written before it stopped: one staleness entry is served, now's.
    KillSwitch(home["home"]).set_trigger(
        "staleness", "HALTED", "newest feature bar is 61 min stale (limit 60)", by="auto:sensor"
    )
    btc = get(base, "/ml/predict_ensemble", symbol="BTCUSDT").json()
    assert (btc["signal"], btc["kill_switch_reason"]) == ("HOLD", STALE_REASON)


def test_stale_entry_without_a_switch_file_keeps_the_published_reason(clocked, home):
    base, clock = clocked
    drift = "drift REDUCING: PSI 0.310 on vol_20 (BTCUSDT)"
    publish(home, kill_switch="REDUCING", kill_switch_reason=drift)
    clock["now"] = minutes_stale(home, STALE_LIMIT + 1)
    btc = get(base, "/ml/predict_ensemble", symbol="BTCUSDT").json()
    assert (btc["signal"], btc["kill_switch"], btc["kill_switch_applied"]) == (
        "HOLD",
        "HALTED",
        True,
    )
    assert btc["kill_switch_reason"] == f"{STALE_REASON}; {drift}"
    (home["home"] / "kill_switch.json").write_text("{")  # unreadable: HALTED, named first
    reason = get(base, "/ml/predict", symbol="BTCUSDT").json()["kill_switch_reason"]
    assert reason.startswith("kill-switch state unknown, treated as HALTED")
    assert reason.endswith(f"; {STALE_REASON}")


def test_corrupt_kill_switch_file_is_unhealthy_and_named(api, home):
    base, _ = api
    (home["home"] / "kill_switch.json").write_text('{"state": "ACTIVE", "entr')
    health = get(base, "/healthz")
    assert health.status_code == 503
    [reason] = health.json()["reasons"]
    assert reason.startswith("kill-switch HALTED: kill-switch state unknown, treated as HALTED")
    assert "kill_switch.json is corrupt (invalid JSON" in reason
    # Fails safe: served as HALTED, so BTC's published ENTRY_LONG (made while ACTIVE) is cut.
    btc = get(base, "/ml/predict_ensemble", symbol="BTCUSDT").json()
    assert (btc["kill_switch"], btc["signal"], btc["size"]) == ("HALTED", "HOLD", 0.0)
    assert btc["kill_switch_applied"] is True
    assert btc["kill_switch_reason"].startswith("kill-switch state unknown, treated as HALTED")
    metrics = {f.name: f for f in text_string_to_metric_families(get(base, "/metrics/prom").text)}
    assert metrics["levibot_kill_switch_state"].samples[0].value == 2


def test_deep_status(api, home):
    base, rows = api
    body = get(base, "/ml/models/deep/status").json()
    assert set(body["symbols"]) == set(SYMBOLS) and body["kill_switch"]["state"] == "ACTIVE"
    btc = body["symbols"]["BTCUSDT"]
    assert btc["deep_version"] == "3" and btc["mc_samples"] == 5 and btc["model_exported"]
    assert btc["bar_time"] == home["bar_time"] and btc["stale"] is False


def test_openapi_documents_every_endpoint(api):
    base, _ = api
    paths = set(get(base, "/openapi.json").json()["paths"])
    assert {
        "/ml/predict_deep",
        "/ml/predict_ensemble",
        "/ml/predict",
        "/ml/models/deep/status",
        "/metrics/prom",
        "/healthz",
        "/livez",
    } <= paths
    assert get(base, "/docs").status_code == 200


def test_metrics_equal_the_published_values(api, home):
    base, rows = api
    before = time.time()
    r = get(base, "/metrics/prom")
    after = time.time()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fam = {f.name: f for f in text_string_to_metric_families(r.text)}

    def by(name: str, label: str) -> dict:
        return {s.labels[label]: s.value for s in fam[name].samples}

    assert by("levibot_ml_uncertainty", "symbol") == {s: rows[s]["deep_sigma"] for s in SYMBOLS}
    assert by("levibot_ml_regime_state", "symbol") == {"BTCUSDT": 1, "ETHUSDT": 0, "SOLUSDT": -1}
    assert by("levibot_ml_signal", "symbol") == {"BTCUSDT": 1, "ETHUSDT": 0, "SOLUSDT": 2}
    assert by("levibot_ml_position", "symbol") == {"BTCUSDT": 0.5, "ETHUSDT": 0.0, "SOLUSDT": 0.0}
    assert by("levibot_ml_cross_asset_ratio", "pair") == {"BTC_ETH": 30.5, "ETH_SOL": 15.25}
    assert by("levibot_paper_drawdown_ratio", "symbol") == {
        "BTCUSDT": 0.0,
        "ETHUSDT": 0.01,
        "SOLUSDT": 0.02,
    }
    p_up = {
        (s.labels["symbol"], s.labels["model"]): s.value for s in fam["levibot_ml_p_up"].samples
    }
    assert p_up[("ETHUSDT", "deep")] == rows["ETHUSDT"]["deep_p_up"]
    assert p_up[("ETHUSDT", "lgbm")] == 0.55 and len(p_up) == 9
    assert fam["levibot_kill_switch_state"].samples[0].value == 0
    published_s = fam["levibot_predictions_published_timestamp_seconds"].samples[0].value
    assert published_s == rows["BTCUSDT"]["published_at"] / 1000
    lag = by("levibot_data_lag_seconds", "symbol")["BTCUSDT"]
    close_s = (home["bar_time"] + TF_MS) / 1000
    assert before - close_s - 0.001 <= lag <= after - close_s + 0.001


def _latest(**kw) -> LatestPredictions:
    rows = {s: make_row(s, **kw) for s in SYMBOLS}
    return LatestPredictions(published_at=rows["BTCUSDT"]["published_at"], rows=rows)


def test_render_metrics_hand_values(tmp_path):
    latest = _latest(bar_time=0, published_at=960_000)
    settings = Settings(home=tmp_path)
    # now = 1,000,000 ms: data lag = (1,000,000 - 900,000) / 1000 = 100 s; age = 40 s
    text = render_metrics(latest, settings.market.symbols, 1_000_000).decode()
    fam = {f.name: f for f in text_string_to_metric_families(text)}
    assert {s.value for s in fam["levibot_data_lag_seconds"].samples} == {100.0}
    assert {s.value for s in fam["levibot_prediction_age_seconds"].samples} == {40.0}
    assert fam["levibot_predictions_published_timestamp_seconds"].samples[0].value == 960.0
    assert set(fam) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert f"# HELP {name} " in text
    fam = {
        f.name: f
        for f in text_string_to_metric_families(
            render_metrics(latest, settings.market.symbols, 1_000_000, "HALTED").decode()
        )
    }
    assert fam["levibot_kill_switch_state"].samples[0].value == KILL_SWITCH_CODES["HALTED"]
    assert SIGNAL_CODES == {"ENTRY_LONG": 1, "ENTRY_SHORT": -1, "HOLD": 0, "EXIT": 2}


def test_push_metrics(tmp_path):
    received = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body.decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    gateway = HTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=gateway.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{gateway.server_port}"
        symbols = Settings(home=tmp_path).market.symbols
        assert push_metrics(url, _latest(), symbols, now_ms=2_000_000) is True
    finally:
        gateway.shutdown()
    assert received[0][0] == "/metrics/job/levibot"
    assert 'levibot_ml_uncertainty{symbol="ETHUSDT"} 0.006' in received[0][1]
    assert push_metrics(None, _latest(), symbols) is False
    dead = f"http://127.0.0.1:{_free_port()}"
    assert push_metrics(dead, _latest(), symbols) is False


def _exprs(obj) -> list[str]:
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k == "expr" and isinstance(v, str)] + [
            e for v in obj.values() for e in _exprs(v)
        ]
    if isinstance(obj, list):
        return [e for v in obj for e in _exprs(v)]
    return []


METRIC_IN_EXPR = re.compile(r"\b(?:levibot|process|python)_[a-z_]+")


def test_dashboard_and_alerts_use_emitted_metrics(api):
    """Every metric a panel or an alert names is served by the real /metrics/prom (family or
    sample name, e.g. a histogram's ``_bucket``); no alert reads an age frozen by a push."""
    import yaml

    base, _ = api
    assert get(base, "/healthz").status_code == 200  # a request, so the API metrics have samples
    families = list(text_string_to_metric_families(get(base, "/metrics/prom").text))
    emitted = {f.name for f in families} | {s.name for f in families for s in f.samples}
    assert {"levibot_api_request_duration_seconds_bucket", "process_cpu_seconds_total"} <= emitted
    dashboard = json.loads((DEPLOY / "grafana" / "levibot-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert len(panels) >= 9
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    for panel in panels:
        exprs = _exprs(panel.get("targets", []))
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            names = set(METRIC_IN_EXPR.findall(expr))
            assert names and names <= emitted, (panel["title"], names - emitted)
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert {"LevibotDataStale", "LevibotKillSwitchHalted", "LevibotPredictionOld"} <= {
        a["alert"] for a in alerts
    }
    for alert in alerts:
        names = set(METRIC_IN_EXPR.findall(alert["expr"]))
        assert names <= emitted, (alert["alert"], names - emitted)
        assert not {"levibot_data_lag_seconds", "levibot_prediction_age_seconds"} & names
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = scrape["scrape_configs"][0]
    assert job["job_name"] == "levibot" and job["metrics_path"] == "/metrics/prom"


PREDICT_PATHS = ("/ml/predict", "/ml/predict_ensemble", "/ml/predict_deep")


def assert_predictions_unreadable(base: str, why: str) -> None:
    """Every predictions endpoint 503 naming ``why``; /healthz 503; /metrics/prom 200 with
    only ``levibot_predictions_available 0``."""
    for path in PREDICT_PATHS:
        r = get(base, path, symbol="BTCUSDT")
        assert r.status_code == 503, (path, r.text)
        assert r.json()["detail"].startswith("published predictions are unreadable"), path
        assert why in r.json()["detail"], (path, r.json()["detail"])
    r = get(base, "/ml/models/deep/status")
    assert r.status_code == 503 and why in r.json()["detail"]
    health = get(base, "/healthz")
    assert health.status_code == 503, health.text
    assert any(why in reason for reason in health.json()["reasons"]), health.json()
    metrics = get(base, "/metrics/prom")
    assert metrics.status_code == 200, metrics.text
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    assert set(families) & set(METRIC_NAMES) == {"levibot_predictions_available"}
    assert families["levibot_predictions_available"].samples[0].value == 0


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("signal", "BUY", "row ETHUSDT: column 'signal' has ['BUY']"),
        ("kill_switch", "PAUSED", "row ETHUSDT: column 'kill_switch' has ['PAUSED']"),
        ("ensemble_p_up", 1.7, "row ETHUSDT: probabilities/confidences outside [0, 1]"),
        ("close", "100", "row ETHUSDT: 'close' is '100' (str), expected a float"),
    ],
)
def test_bad_values_in_the_published_file_are_503_everywhere(api, home, column, value, why):
    base, _ = api
    path = published_dir(home["home"]) / "latest_predictions.json"
    doc = json.loads(path.read_text())
    [eth] = [r for r in doc["rows"] if r["symbol"] == "ETHUSDT"]
    eth[column] = value
    path.write_text(json.dumps(doc))
    assert_predictions_unreadable(base, why)


def assert_served_halted(base: str, why: str) -> None:
    """The switch is unknown: served HALTED saying so on every endpoint, never 500."""
    for path in PREDICT_PATHS:
        r = get(base, path, symbol="BTCUSDT")
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        assert (body["kill_switch"], body["signal"], body["size"]) == ("HALTED", "HOLD", 0.0)
        assert body["kill_switch_reason"].startswith("kill-switch state unknown, treated as HALTED")
        assert why in body["kill_switch_reason"], body["kill_switch_reason"]
    status = get(base, "/ml/models/deep/status")
    assert status.status_code == 200 and status.json()["kill_switch"]["state"] == "HALTED"
    health = get(base, "/healthz")
    assert health.status_code == 503, health.text
    [reason] = health.json()["reasons"]
    assert reason.startswith("kill-switch HALTED: kill-switch state unknown, treated as HALTED")
    assert health.json()["kill_switch"]["state"] == "HALTED"
    metrics = get(base, "/metrics/prom")
    assert metrics.status_code == 200, metrics.text
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    assert families["levibot_kill_switch_state"].samples[0].value == KILL_SWITCH_CODES["HALTED"]
    assert families["levibot_predictions_available"].samples[0].value == 1


MANUAL_ENTRY = {"state": "REDUCING", "reason": "thin book", "by": "ops", "since": 1}


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (
            {"state": "REDUCING", "entries": {"manual": {**MANUAL_ENTRY, "since": "yesterday"}}},
            "entry 'manual' has since 'yesterday'",
        ),
        ({"state": "PAUSED", "entries": {}, "updated_at": 1}, "state 'PAUSED'"),
        (
            {"state": "PAUSED", "entries": {"manual": {**MANUAL_ENTRY, "state": "PAUSED"}}},
            "entry 'manual' has state 'PAUSED'",
        ),
    ],
)
def test_bad_kill_switch_values_are_served_halted(api, home, doc, why):
    base, _ = api
    (home["home"] / "kill_switch.json").write_text(json.dumps({"updated_at": 1, **doc}))
    assert_served_halted(base, why)


@contextmanager
def directory_in_place_of(path: Path) -> Iterator[None]:
    """A directory where ``path`` (a file) should be; the file restored afterwards."""
    saved = path.read_bytes() if path.exists() else None
    path.unlink(missing_ok=True)
    path.mkdir()
    try:
        yield
    finally:
        path.rmdir()
        if saved is not None:
            path.write_bytes(saved)


def test_a_directory_in_place_of_the_published_file_is_503_everywhere(api, home):
    base, _ = api
    with directory_in_place_of(published_dir(home["home"]) / "latest_predictions.json"):
        assert_predictions_unreadable(base, "is unreadable: IsADirectoryError")
    assert get(base, "/healthz").status_code == 200  # readable again: served again


def test_a_directory_in_place_of_the_kill_switch_is_served_halted(api, home):
    base, _ = api
    with directory_in_place_of(home["home"] / "kill_switch.json"):
        assert_served_halted(base, "is unreadable: IsADirectoryError")
    assert get(base, "/healthz").status_code == 200


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file: no permission error")
def test_unreadable_permissions_are_503_or_halted(api, home):
    base, _ = api
    published = published_dir(home["home"]) / "latest_predictions.json"
    published.chmod(0)
    try:
        assert_predictions_unreadable(base, "is unreadable: PermissionError")
    finally:
        published.chmod(0o644)
    kill = home["home"] / "kill_switch.json"
    kill.write_text(json.dumps({"state": "ACTIVE", "entries": {}, "updated_at": 1}))
    kill.chmod(0)
    try:
        assert_served_halted(base, "is unreadable: PermissionError")
    finally:
        kill.chmod(0o644)


HEAD_PATHS = (
    ("/ml/predict_deep", {"symbol": "BTCUSDT"}),
    ("/ml/predict_ensemble", {"symbol": "BTCUSDT"}),
    ("/ml/predict", {"symbol": "BTCUSDT"}),
    ("/ml/predict", {"symbol": "NOPE"}),
    ("/ml/predict", {}),
    ("/ml/models/deep/status", {}),
    ("/metrics/prom", {}),
    ("/healthz", {}),
    ("/livez", {}),
    ("/openapi.json", {}),
    ("/docs", {}),
)


@pytest.mark.parametrize("path,params", HEAD_PATHS)
def test_head_answers_like_get_without_a_body(api, path, params):
    base, _ = api
    got = get(base, path, **params)
    head = requests.head(f"{base}{path}", params=params, timeout=30)
    assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
    assert head.content == b""
    assert head.headers.get("content-type") == got.headers.get("content-type")


def test_head_routes_stay_out_of_the_openapi_document(api):
    base, _ = api
    methods = {m for ops in get(base, "/openapi.json").json()["paths"].values() for m in ops}
    assert methods == {"get"}


@pytest.mark.parametrize(
    "host,port,expected",
    [
        (None, None, ("127.0.0.1", 8123)),
        (None, 0, ("127.0.0.1", 0)),
        ("", 9000, ("", 9000)),
        ("0.0.0.0", 8001, ("0.0.0.0", 8001)),
    ],
)
def test_run_server_binds_the_given_host_and_port_even_port_0(
    tmp_path, monkeypatch, host, port, expected
):
    from levibot_pipelines import api as api_module
    from levibot_pipelines.settings import ServingSettings

    settings = Settings(home=tmp_path, serving=ServingSettings(api_host="127.0.0.1", api_port=8123))
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    api_module.run_server(settings, host=host, port=port)
    assert (seen["host"], seen["port"]) == expected


def test_server_address_keeps_port_0_and_defaults_only_none(tmp_path):
    from levibot_pipelines.api import server_address

    settings = Settings(home=tmp_path)
    assert server_address(settings, None, 0) == (settings.serving.api_host, 0)
    assert server_address(settings) == (settings.serving.api_host, settings.serving.api_port)


TOKEN = "s3cret-token-0123456789abcdef"
PROTECTED = (
    ("/ml/predict_deep", {"symbol": "BTCUSDT"}),
    ("/ml/predict_ensemble", {"symbol": "BTCUSDT"}),
    ("/ml/predict", {"symbol": "BTCUSDT"}),
    ("/ml/predict", {}),  # 401 before the 422 of the missing symbol
    ("/ml/models/deep/status", {}),
    ("/metrics/prom", {}),
)


@pytest.fixture(scope="module")
def authed(home):
    """A second server over the same home with LEVIBOT_API_TOKEN set."""
    from levibot_pipelines.settings import ServingSettings

    settings = Settings(
        home=home["home"],
        models=ModelSettings(mc_samples=5, precision="fp32"),
        serving=ServingSettings(api_token=TOKEN),
    )
    with serving(create_app(settings)) as base:
        yield base


def test_without_a_token_configured_no_route_asks_for_one(api):
    base, _ = api
    for path, params in PROTECTED[:3] + PROTECTED[4:]:
        assert get(base, path, **params).status_code == 200, path
    assert "securitySchemes" not in get(base, "/openapi.json").json().get("components", {})


@pytest.mark.parametrize("path,params", PROTECTED)
def test_with_a_token_every_data_route_needs_it(api, authed, path, params):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = requests.get(f"{authed}{path}", params=params, headers=headers, timeout=30)
        assert r.status_code == 401, (path, headers, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in r.json()["detail"] and "BTCUSDT" not in r.text
        head = requests.head(f"{authed}{path}", params=params, headers=headers, timeout=30)
        assert head.status_code == 401
    ok = requests.get(
        f"{authed}{path}", params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert ok.status_code == (422 if path.startswith("/ml/predict") and not params else 200), (
        path,
        ok.text,
    )


def test_with_a_token_healthz_and_the_docs_stay_open(api, authed):
    assert get(authed, "/healthz").status_code == 200
    assert requests.head(f"{authed}/healthz", timeout=30).status_code == 200
    assert get(authed, "/livez").status_code == 200
    assert requests.head(f"{authed}/livez", timeout=30).status_code == 200
    schema = get(authed, "/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert get(authed, "/docs").status_code == 200
    assert TOKEN not in get(authed, "/openapi.json").text


@pytest.mark.parametrize(
    "host,token,warns",
    [
        ("127.0.0.1", None, False),
        ("127.8.9.10", None, False),
        ("::1", None, False),
        ("[::1]", None, False),
        ("localhost", None, False),
        ("LOCALHOST", None, False),
        ("0.0.0.0", None, True),
        ("", None, True),
        ("::", None, True),
        ("192.168.1.5", None, True),
        ("example.com", None, True),
        ("0.0.0.0", TOKEN, False),
        ("example.com", TOKEN, False),
    ],
)
def test_exposure_warning(host, token, warns):
    from levibot_pipelines.api import exposure_warning

    text = exposure_warning(host, token)
    assert (text is not None) == warns
    if warns:
        assert "WITHOUT authentication" in text and "LEVIBOT_API_TOKEN" in text


def test_serve_warns_when_exposed_without_a_token(tmp_path, monkeypatch, caplog):
    from levibot_pipelines import cli

    monkeypatch.setenv("LEVIBOT_HOME", str(tmp_path))
    monkeypatch.delenv("LEVIBOT_API_TOKEN", raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    with caplog.at_level("WARNING", logger="levibot_pipelines.api"):
        assert cli.main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 0
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "WITHOUT authentication" in caplog.text
    caplog.clear()
    monkeypatch.setenv("LEVIBOT_API_TOKEN", TOKEN)
    with caplog.at_level("WARNING", logger="levibot_pipelines.api"):
        assert cli.main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 0
        assert cli.main(["serve", "--port", "0"]) == 0
    assert caplog.records == [] and TOKEN not in caplog.text


def test_token_bucket_with_an_injected_clock():
    from levibot_pipelines.usecases.recompute import TokenBucket

    now = [100.0]
    bucket = TokenBucket(3, per_minute=6.0, clock=lambda: now[0])  # one token every 10 s
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(10.0)
    now[0] += 4.0
    assert bucket.take() == pytest.approx(6.0)
    now[0] += 6.0
    assert bucket.take() == 0.0
    now[0] += 1000.0  # refills up to the capacity only
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="capacity=0"):
        TokenBucket(0, 1.0)


def test_recomputes_beyond_the_budget_are_429_and_cache_hits_free(api, home, monkeypatch):
    from levibot_pipelines.usecases import recompute

    monkeypatch.setattr(recompute, "RECOMPUTE_BURST", 3)
    monkeypatch.setattr(recompute, "RECOMPUTE_PER_MINUTE", 1.0)
    settings = Settings(home=home["home"], models=ModelSettings(mc_samples=5, precision="fp32"))
    with serving(create_app(settings)) as base:
        for n in (11, 12, 13):
            r = get(base, "/ml/predict_deep", symbol="BTCUSDT", n_samples=n)
            assert r.status_code == 200 and r.json()["recomputed"] is True
        limited = get(base, "/ml/predict_deep", symbol="BTCUSDT", n_samples=14)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "too many on-demand MC recomputes" in limited.json()["detail"]
        # Cached N, the published N and the other routes still answer.
        assert get(base, "/ml/predict_deep", symbol="BTCUSDT", n_samples=12).status_code == 200
        published = get(base, "/ml/predict_deep", symbol="BTCUSDT", n_samples=5)
        assert published.status_code == 200 and published.json()["recomputed"] is False
        assert get(base, "/ml/predict", symbol="BTCUSDT").status_code == 200
