"""Shadow challengers end to end through Dagster, on a home of its own with the session's tiny
profile and a fixed replay of synthetic candles (``LEVIBOT_SOURCE=files``: the same bars whatever
the time of the run, so the same models): a retrain becomes SOL's challenger, ``publish_job``
publishes it under ``published/shadow`` beside the champions without touching the paper book or
the kill-switch, live scoring scores it as ``shadow_*``, and after enough matured paired bars
the shadow rule promotes the better challenger (LightGBM: the alias moves, the decision is
recorded, the ensemble is refitted for the new pair) and retires the worse one (Transformer)."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
import pytest

from levibot_pipelines.adapters.home import history_dir
from levibot_pipelines.adapters.live_files import read_scores, read_summary
from levibot_pipelines.adapters.prediction_files import (
    read_history,
    read_latest,
    validate_rows,
    write_shadow,
)
from levibot_pipelines.adapters.registry import model_name
from levibot_pipelines.adapters.store import ParquetStore, write_parquet_atomic
from levibot_pipelines.core.data.synthetic import simulate_bars
from levibot_pipelines.core.evaluation.live_scoring import outcomes
from levibot_pipelines.definitions import load_definitions
from levibot_pipelines.defs.live import live_scores
from levibot_pipelines.defs.resources import ModelResource, TradingResource
from levibot_pipelines.defs.shadow import shadow_predictions
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.shadow import untraded
from levibot_pipelines_tests.conftest import SESSION_ENV, SYMBOLS, TF_MS, levibot_environment
from levibot_pipelines_tests.test_prediction_files import make_row
from levibot_pipelines_tests.test_shadow import MEAN, T_H1

SYMBOL = "SOLUSDT"
N_PAIRED = 16  # fabricated past publishes of SOL, champion and shadow, 200 bars back
START = "2026-01-01"
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
N_BARS = 20 * 96  # 20 days of 15m bars, as the session's synthetic home


def _aliases(home: Path, kind: str) -> dict[str, str]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    return {
        k: str(v) for k, v in client.get_registered_model(model_name(kind, SYMBOL)).aliases.items()
    }


def _tags(home: Path, kind: str, version: str) -> dict[str, str]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    return dict(client.get_model_version(model_name(kind, SYMBOL), version).tags)


def _past_publishes(home: Path, champions: dict, challengers: dict) -> list[int]:
    """SOL's champion and shadow rows for ``N_PAIRED`` old bars (horizon 1, matured): the
    LightGBM challenger right with 0.8 on 3 bars of 4 and wrong with 0.6 on the 4th while its
    champion says 0.5 (test_shadow's hand-checked pattern); the Transformer the other way
    round. Returns the bars."""
    bars = ParquetStore(home).read_ohlcv(SYMBOL)
    known = outcomes(bars, tf_ms=TF_MS, horizon=1).sort("bar_time")
    picked = known.slice(known.height - 200 - N_PAIRED, N_PAIRED)
    for i, (bar, y) in enumerate(picked.select("bar_time", "y_up").iter_rows()):
        good = 0.4 if i % 4 == 3 else 0.8  # P(the realised direction)
        p_good = good if y == 1 else 1.0 - good
        base = {
            "bar_time": bar,
            "published_at": bar + TF_MS + 30_000,
            "ensemble_p_up": 0.5,
            "signal": "HOLD",
            "size": 0.0,
            "position": 0.0,
            "stop_loss": None,
            "take_profit": None,
        }
        champion = make_row(SYMBOL, **base, lgbm_p_up=0.5, deep_p_up=p_good, **_versions(champions))
        row = pl.DataFrame([champion])
        path = history_dir(home) / f"predictions-{bar}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet_atomic(validate_rows(row), path)
        shadow = {**champion, **untraded(champion), **_versions(challengers)}
        write_shadow(home, pl.DataFrame([{**shadow, "lgbm_p_up": p_good, "deep_p_up": 0.5}]))
    return picked.get_column("bar_time").to_list()


def _versions(v: dict[str, str]) -> dict[str, str]:
    return {"lgbm_version": v["lgbm"], "deep_version": v["deep"]}


def _files(home: Path) -> dict[str, bytes]:
    """Every file the champions' trade lives in: published rows, history, kill-switch."""
    paths = [
        home / "published" / "latest_predictions.json",
        home / "published" / "latest_predictions.parquet",
        *sorted((home / "published" / "history").glob("*.parquet")),
        home / "kill_switch.json",
        home / "kill_switch_history.jsonl",
    ]
    return {str(p): p.read_bytes() for p in paths if p.exists()}


def _materialize(assets: list, settings: Settings, instance) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        assets,
        resources={"trading": TradingResource(settings), "models": ModelResource(settings)},
        instance=instance,
    )
    assert result.success
    return result


@pytest.fixture(scope="module")
def replay_env(tmp_path_factory):
    """The session's tiny settings on a home of this module's own, candles replayed from files
    (fixed bars from 2026-01-01, 20 days)."""
    root = tmp_path_factory.mktemp("shadow_pipeline")
    files = root / "candles"
    files.mkdir()
    end = START_MS + (N_BARS - 1) * TF_MS
    for symbol in SYMBOLS:
        simulate_bars(symbol, START_MS, end, TF_MS, seed=7).write_parquet(
            files / f"{symbol}-15m.parquet"
        )
    values = {
        **SESSION_ENV,
        "LEVIBOT_HOME": str(root / "home"),
        "LEVIBOT_SOURCE": "files",
        "LEVIBOT_FILES_DIR": str(files),
        "LEVIBOT_START": START,
    }
    with levibot_environment(values):
        yield values


@pytest.fixture(scope="module")
def pipeline(replay_env):
    home = Path(replay_env["LEVIBOT_HOME"])
    defs = load_definitions()
    out: dict = {"home": home}
    with dg.instance_for_test() as inst:
        for symbol in SYMBOLS:
            defs.resolve_job_def("ingest_job").execute_in_process(
                partition_key=symbol, instance=inst
            )
        defs.resolve_job_def("features_job").execute_in_process(instance=inst)
        training = defs.resolve_job_def("training_job")
        for symbol in SYMBOLS:  # the champions: the first model of each symbol
            assert training.execute_in_process(partition_key=symbol, instance=inst).success
        assert training.execute_in_process(partition_key=SYMBOL, instance=inst).success
        kinds = ("lgbm", "deep")
        champions = {k: _aliases(home, k)["champion"] for k in kinds}
        challengers = {k: _aliases(home, k)["challenger"] for k in kinds}
        out |= {"champions": champions, "challengers": challengers}
        out["bars"] = _past_publishes(home, champions, challengers)
        out["publish"] = defs.resolve_job_def("publish_job").execute_in_process(instance=inst)
        out["summary"] = read_summary(home)
        out["latest"], out["shadow"] = read_latest(home), read_latest(home, shadow=True)
        out["aliases_after_publish"] = {k: _aliases(home, k) for k in kinds}
        s = Settings.from_env()
        # The shadow publish once more, alone: the champions' files must not change.
        before = _files(home)
        out["shadow_history_before"] = read_history(home, shadow=True).height
        out["again"] = _materialize([shadow_predictions], s, inst)
        out["files_unchanged"] = before == _files(home)
        out["shadow_after_again"] = read_latest(home, shadow=True)
        # The pre-declared rule with a minimum the fabricated bars reach.
        rule = dataclasses.replace(
            s, serving=dataclasses.replace(s.serving, shadow_min_bars=N_PAIRED)
        )
        out["promotion"] = _materialize([live_scores, shadow_predictions], rule, inst)
        out["aliases"] = {k: _aliases(home, k) for k in kinds}
        out["ensemble"] = json.loads((home / "models" / SYMBOL / "ensemble.json").read_text())
        out["shadow_after_promotion"] = read_latest(home, shadow=True)
    return out


def _meta(result, node: str) -> dict:
    mats = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mats[0].metadata.items()}


def test_the_retrain_is_published_in_shadow_never_traded(pipeline):
    result = pipeline["publish"]
    assert result.success
    latest, shadow = pipeline["latest"], pipeline["shadow"]
    champion, row = latest.rows[SYMBOL], shadow.rows[SYMBOL]
    chal, champ = pipeline["challengers"], pipeline["champions"]
    assert (row["lgbm_version"], row["deep_version"]) == (chal["lgbm"], chal["deep"])
    assert (champion["lgbm_version"], champion["deep_version"]) == (champ["lgbm"], champ["deep"])
    assert row["bar_time"] == champion["bar_time"] and 0.0 <= row["lgbm_p_up"] <= 1.0
    assert (row["signal"], row["size"], row["position"], row["decision_model"]) == (
        "HOLD",
        0.0,
        0.0,
        "flat",
    )
    assert row["decision_reason"] == "shadow: scored, never traded"
    assert row["kill_switch"] == champion["kill_switch"]
    meta = _meta(result, "shadow_predictions")
    assert meta["challengers"][SYMBOL] == chal and meta["promoted"] == meta["retired"] == []
    # 16 paired bars < LEVIBOT_SHADOW_MIN_BARS (500): both challengers wait.
    for kind in ("lgbm", "deep"):
        line = f"| {SYMBOL} | {kind} | {champ[kind]} | {chal[kind]} | wait | 16 |"
        assert line in meta["decisions"]
    for kind in ("lgbm", "deep"):  # waiting: no alias moved
        assert pipeline["aliases_after_publish"][kind] == {
            "champion": champ[kind],
            "challenger": chal[kind],
        }


def test_the_shadow_publish_leaves_the_champions_trade_alone(pipeline):
    assert pipeline["files_unchanged"]  # published rows, history, paper book, kill-switch
    again = pipeline["shadow_after_again"]
    assert SYMBOL in again.rows and again.rows[SYMBOL]["signal"] == "HOLD"
    history = read_history(pipeline["home"], shadow=True)
    assert history.height > pipeline["shadow_history_before"]
    champion_history = read_history(pipeline["home"])
    assert champion_history.filter(
        pl.col("decision_reason") == "shadow: scored, never traded"
    ).is_empty()


def test_live_scoring_scores_the_shadow_as_its_own_models(pipeline):
    models = pipeline["summary"]["symbols"][SYMBOL]["models"]
    assert {"shadow_lgbm", "shadow_deep", "shadow_ensemble"} <= set(models)
    shadow = read_scores(pipeline["home"], shadow=True)
    sol = shadow.filter(pl.col("symbol") == SYMBOL)
    assert set(pipeline["bars"]) <= set(sol.get_column("bar_time").to_list())
    # The fabricated bars: the shadow LightGBM's log loss is -(3 ln 0.8 + ln 0.4) / 4.
    mine = sol.filter(pl.col("bar_time").is_in(pipeline["bars"]))
    y, p = mine["y_up"].cast(pl.Float64), mine["lgbm_p_up"]
    ll = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert ll == pytest.approx(-(3 * math.log(0.8) + math.log(0.4)) / 4)
    assert models["shadow_lgbm"]["wf_auc"] is None and models["shadow_lgbm"]["below"] is False


def test_the_better_challenger_is_promoted_and_the_worse_retired(pipeline):
    home, champ, chal = pipeline["home"], pipeline["champions"], pipeline["challengers"]
    aliases = pipeline["aliases"]
    assert aliases["lgbm"]["champion"] == chal["lgbm"] and "challenger" not in aliases["lgbm"]
    assert aliases["deep"]["champion"] == champ["deep"] and "challenger" not in aliases["deep"]
    won = _tags(home, "lgbm", chal["lgbm"])
    assert (won["shadow_action"], won["alias"]) == ("promote", "champion")
    assert won["shadow_n_bars"] == "16" and won["shadow_champion_version"] == champ["lgbm"]
    assert float(won["shadow_mean_diff"]) == pytest.approx(MEAN)
    assert float(won["shadow_t"]) == pytest.approx(T_H1)
    assert won["shadow_decision"].startswith("promoted: beats the champion (16 paired bars")
    assert _tags(home, "lgbm", champ["lgbm"])["replaced_by"] == chal["lgbm"]
    lost = _tags(home, "deep", chal["deep"])
    assert (lost["shadow_action"], lost["alias"]) == ("retire", "none")
    assert float(lost["shadow_t"]) == pytest.approx(-T_H1)
    # The ensemble and decision policy were refitted for the new champion pair.
    ens = pipeline["ensemble"]
    assert (ens["lgbm_version"], ens["deep_version"]) == (chal["lgbm"], champ["deep"])
    meta = _meta(pipeline["promotion"], "shadow_predictions")
    assert meta["promoted"] == [f"{SYMBOL}/lgbm"] and meta["retired"] == [f"{SYMBOL}/deep"]
    # SOL has no challenger left: no shadow row for it any more.
    after = pipeline["shadow_after_promotion"]
    assert after is None or SYMBOL not in after.rows
