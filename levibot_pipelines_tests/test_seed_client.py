"""The seed's contract: its integration client, run as written against the real API (uvicorn on
loopback) over published predictions, and the seed's signal vocabulary with the side beside it."""

from __future__ import annotations

import time

import polars as pl
import pytest
import requests

from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.adapters.prediction_files import write_published
from levibot_pipelines.api import create_app
from levibot_pipelines.api_responses import seed_signal
from levibot_pipelines.settings import ModelSettings, Settings
from levibot_pipelines_tests.test_api import build_home, serving
from levibot_pipelines_tests.test_prediction_files import SYMBOLS, make_row

# The seed's example client, verbatim (``...`` stands for the client's own entry logic).
SEED_CLIENT = """\
r = requests.get(f"{API}/ml/predict_deep", params={"symbol": "BTCUSDT"}); data = r.json()
uncertainty = data["uncertainty"]; size = data["size"]
if uncertainty > 0.05: size = 0
if data["signal"] == "ENTRY": ...
"""
ROUTES = ("/ml/predict_deep", "/ml/predict_ensemble", "/ml/predict")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> dict:
    return build_home(tmp_path_factory.mktemp("seed_home"))


@pytest.fixture(scope="module")
def base(home) -> str:
    settings = Settings(home=home["home"], models=ModelSettings(mc_samples=5, precision="fp32"))
    with serving(create_app(settings)) as url:
        yield url


def publish_bar(home: dict, bar_time: int, **per_symbol: dict) -> None:
    """One publish at ``bar_time``, now; ``per_symbol`` maps a symbol to its row overrides."""
    now = int(time.time() * 1000)
    rows = [
        make_row(s, bar_time=bar_time, published_at=now, **per_symbol.get(s, {})) for s in SYMBOLS
    ]
    write_published(home["home"], pl.DataFrame(rows), home["models"])
    time.sleep(0.002)  # the next publish gets a later published_at


def run_seed_client(api: str) -> dict:
    """Run ``SEED_CLIENT`` with ``API`` = ``api``; its variables afterwards."""
    scope = {"requests": requests, "API": api}
    exec(SEED_CLIENT, scope)  # noqa: S102 (the seed's code, as a user pastes it)
    return scope


def test_the_seeds_client_runs_as_written(home, base):
    # BTC published ENTRY_LONG, size 0.5, predictive std 0.005 (below the seed's 0.05 cut).
    publish_bar(home, home["bar_time"], BTCUSDT={"deep_sigma": 0.005})
    out = run_seed_client(base)
    assert out["r"].status_code == 200
    assert type(out["uncertainty"]) is float and out["uncertainty"] == 0.005
    assert out["data"]["signal"] == "ENTRY" and out["data"]["side"] == "long"
    assert out["size"] == 0.5  # kept: uncertainty 0.005 <= 0.05
    # Predictive std 0.08 > 0.05: the seed's client zeroes the size.
    publish_bar(home, home["bar_time"], BTCUSDT={"deep_sigma": 0.08})
    out = run_seed_client(base)
    assert out["uncertainty"] == 0.08 and out["size"] == 0
    assert out["data"]["uncertainty_parts"]["total"] == 0.08


def test_every_prediction_route_speaks_the_seeds_types(home, base):
    publish_bar(home, home["bar_time"])
    for path in ROUTES:
        for symbol in SYMBOLS:
            body = requests.get(f"{base}{path}", params={"symbol": symbol}, timeout=30).json()
            assert body["signal"] in ("ENTRY", "EXIT", "HOLD"), (path, body["signal"])
            assert body["side"] in ("long", "short", None), (path, body["side"])
            if path == "/ml/predict":  # LightGBM: no uncertainty estimate
                assert body["uncertainty"] is None and body["uncertainty_parts"] is None
            else:
                assert type(body["uncertainty"]) is float
                assert body["uncertainty"] == body["uncertainty_parts"]["total"]


def served(base: str, symbol: str) -> tuple[str, str | None]:
    """(signal, side) of ``symbol``, the same on every prediction route."""
    answers = {
        path: requests.get(f"{base}{path}", params={"symbol": symbol}, timeout=30).json()
        for path in ROUTES
    }
    pairs = {(b["signal"], b["side"]) for b in answers.values()}
    assert len(pairs) == 1, answers
    return pairs.pop()


def test_each_published_decision_maps_to_the_seeds_signal_and_a_side(home, base):
    newest = home["bar_time"]
    flat = {"signal": "HOLD", "position": 0.0, "size": 0.0, "stop_loss": None, "take_profit": None}
    # The newest bar: every published decision once. An EXIT names the side it closes as the
    # publisher wrote it (closed_side, from the paper position it replayed).
    exit_ = {**flat, "signal": "EXIT"}
    publish_bar(
        home,
        newest,
        BTCUSDT={**exit_, "closed_side": "long"},
        ETHUSDT={**exit_, "closed_side": "short"},
        SOLUSDT={**exit_, "closed_side": None},
    )
    assert served(base, "BTCUSDT") == ("EXIT", "long")  # closes the long held
    assert served(base, "ETHUSDT") == ("EXIT", "short")  # closes the short held
    assert served(base, "SOLUSDT") == ("EXIT", None)  # nothing was held: no side to name
    short = {"signal": "ENTRY_SHORT", "size": 0.25, "position": -0.25}
    publish_bar(
        home,
        newest,
        BTCUSDT={"signal": "ENTRY_LONG"},
        ETHUSDT={**short, "stop_loss": 204.0, "take_profit": 192.0},
        SOLUSDT={**flat, "position": -0.25},
    )
    assert served(base, "BTCUSDT") == ("ENTRY", "long")
    assert served(base, "ETHUSDT") == ("ENTRY", "short")
    assert served(base, "SOLUSDT") == ("HOLD", "short")  # holding a short
    publish_bar(home, newest, BTCUSDT={**flat, "position": 0.5}, ETHUSDT=flat)
    assert served(base, "BTCUSDT") == ("HOLD", "long")  # holding a long
    assert served(base, "ETHUSDT") == ("HOLD", None)  # flat
    # An entry cut by a HALTED kill-switch is served HOLD, flat: no side.
    KillSwitch(home["home"]).engage("HALTED", "drill", by="test")
    try:
        publish_bar(home, newest)
        assert served(base, "BTCUSDT") == ("HOLD", None)
    finally:
        (home["home"] / "kill_switch.json").unlink()


@pytest.mark.parametrize(
    ("published", "position", "closed", "expected"),
    [
        ("ENTRY_LONG", 0.5, None, ("ENTRY", "long")),
        ("ENTRY_SHORT", -0.5, None, ("ENTRY", "short")),
        ("EXIT", 0.0, "long", ("EXIT", "long")),
        ("EXIT", 0.0, "short", ("EXIT", "short")),
        ("EXIT", 0.0, None, ("EXIT", None)),
        ("HOLD", 0.0, None, ("HOLD", None)),
        ("HOLD", 0.4, None, ("HOLD", "long")),
        ("HOLD", -0.4, None, ("HOLD", "short")),
    ],
)
def test_seed_signal(published, position, closed, expected):
    assert seed_signal(published, position, closed) == expected


def test_seed_signal_rejects_unknown_values():
    with pytest.raises(ValueError, match="unknown published signal 'BUY'"):
        seed_signal("BUY", 0.0, None)
    with pytest.raises(ValueError, match="closed must be 'long', 'short' or None, got 'up'"):
        seed_signal("EXIT", 0.0, "up")
