"""The model assets end to end on tiny synthetic data, with a real MLflow store."""

import io
import json
from types import SimpleNamespace

import mlflow
import pytest
import torch

from levibot_pipelines.adapters.registry import model_name, register_model
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.settings import ModelSettings
from levibot_pipelines.usecases.promote import promote_champion
from levibot_pipelines_tests.conftest import (
    SESSION_ENV,
    SYMBOLS,
    levibot_environment,
    recent_start,
)

SYMBOL = "ETHUSDT"


@pytest.fixture(scope="module")
def trained(instance, tmp_path_factory):
    """Two training runs of one symbol in a home of this module's own: the first version is
    the symbol's first model (champion), the second the retrain. (In the session's home
    another module may have trained the symbol first, on other bars, and its champion would
    decide the retrain's fate.)"""
    home = tmp_path_factory.mktemp("models_defs_home")
    values = {"LEVIBOT_HOME": str(home), "LEVIBOT_START": recent_start(20), **SESSION_ENV}
    with levibot_environment(values):
        from levibot_pipelines.definitions import load_definitions

        defs = load_definitions()
        for symbol in SYMBOLS:
            defs.resolve_job_def("ingest_job").execute_in_process(
                partition_key=symbol, instance=instance
            )
        defs.resolve_job_def("features_job").execute_in_process(instance=instance)
        job = defs.resolve_job_def("training_job")
        first = job.execute_in_process(partition_key=SYMBOL, instance=instance)
        second = job.execute_in_process(partition_key=SYMBOL, instance=instance)
    return first, second, home


def meta(result, node):
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def test_training_registers_versions_and_places_them_like_for_like(trained):
    first, second, home = trained
    assert first.success and second.success
    for node, kind in (("lgbm_model", "lgbm"), ("deep_tfm_model", "deep")):
        m1, m2 = meta(first, node), meta(second, node)
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
        # The symbol's first model: champion directly, nothing to trade otherwise.
        assert m1["model_version"] == "1" and m1["promoted"] is True
        assert m1["alias"] == "champion"
        assert m1["champion_decision"] == "promoted: no champion yet"
        champion = client.get_registered_model(model_name(kind, SYMBOL)).aliases["champion"]
        assert str(champion) == "1"
        assert m2["model_version"] == "2"
        # Same data, same seed: the retrained model ties the champion on the same window.
        assert m2["test_window_ms"] == m1["test_window_ms"]
        assert m2["test_log_loss"] == pytest.approx(m1["test_log_loss"], rel=1e-9)
        # A retrain that passes the offline rule while a champion holds the alias becomes the
        # shadow challenger; the champion stays until the shadow rule promotes it live.
        assert m2["promoted"] is False and m2["alias"] == "challenger"
        assert m2["champion_decision"].startswith("challenger: log_loss ")
        assert f"no worse than champion {m1['test_log_loss']:.6g}" in m2["champion_decision"]
        assert f"in shadow beside champion v{champion}" in m2["champion_decision"]
        assert m1["rows"] == {"train": 600, "val": 150, "calib": 150, "test": 200}
        assert 0.0 <= m1["test_ece"] <= 1.0 and m1["mlflow_run"].startswith("http")
        registered = client.get_registered_model(model_name(kind, SYMBOL))
        assert str(registered.aliases["challenger"]) == "2"
        assert str(registered.aliases["champion"]) == "1"
        tags = client.get_model_version(model_name(kind, SYMBOL), "2").tags
        assert (tags["alias"], tags["promoted"]) == ("challenger", "false")
        assert tags["compared_to_version"] == str(champion)
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e for e in first.get_asset_check_evaluations()
    }
    assert checks[("lgbm_model", "predictions_valid")].passed
    assert checks[("deep_tfm_model", "predictions_valid")].passed
    assert ("model_report", "calibration_and_skill") in checks


def test_deep_weights_load_without_pickle(trained):
    tracker = Tracker.for_home(trained[2], ui_base=ModelSettings().mlflow_ui)
    raw = tracker.download_file(model_name("deep", SYMBOL), "1", "model/state_dict.pt")
    state = torch.load(io.BytesIO(raw), weights_only=True)
    assert "target_scale" in state and all(isinstance(v, torch.Tensor) for v in state.values())
    config = json.loads(tracker.download_file(model_name("deep", SYMBOL), "1", "model/config.json"))
    assert config["window"] == 32  # the small profile
    text = tracker.download_file(model_name("lgbm", SYMBOL), "1", "model/lgbm.txt").decode()
    assert text.startswith("tree")


def test_ensemble_and_report(trained):
    first, second, home = trained
    ens = json.loads((home / "models" / SYMBOL / "ensemble.json").read_text())
    assert 0.0 <= ens["w_lgbm"] <= 1.0
    assert set(ens["test_log_loss"]) == {"lgbm", "deep", "ensemble"}
    # The decision policy stored with the champions: 150 val bars are too few to fit any
    # expected-return map (200), so no candidate is scored and flat wins, saying why.
    d = ens["decision"]
    assert d["policy"]["model"] == "flat" and d["map"] is None
    assert d["policy"]["reason"] == "no validated edge after costs"
    assert d["n_candidates"] == len(d["candidates"]) == 49
    assert {c["status"] for c in d["candidates"]} == {"too few samples", "flat"}
    assert d["test"] == {"n_trades": 0, "net_return": 0.0, "gross_return": 0.0}
    # Chosen on the val then calib bars, both before the test window.
    fit_end, score_start = (
        int(d["chosen_on"]["fit"].split("/")[1]),
        int(d["chosen_on"]["score"].split("/")[0]),
    )
    assert fit_end < score_start and int(d["chosen_on"]["score"].split("/")[1]) < int(
        ens["test_window"].split("/")[0]
    )
    # Written by the second run, for the champions (the retrained versions are challengers).
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    champions = [
        str(client.get_registered_model(model_name(k, SYMBOL)).aliases["champion"])
        for k in ("lgbm", "deep")
    ]
    assert [ens["lgbm_version"], ens["deep_version"]] == champions
    assert meta(second, "ensemble_weights")["lgbm_version"] == champions[0]
    ens_meta = meta(second, "ensemble_weights")
    assert ens_meta["decision"].startswith("flat: no validated edge after costs (0 of 49")
    assert ens_meta["decision_candidates"] == 49
    report = json.loads((home / "reports" / SYMBOL / "report.json").read_text())
    models = report["symbols"][SYMBOL]["models"]
    assert set(models) == {"lgbm", "deep", "ensemble", "base_rate", "last_return", "reversal"}
    assert models["base_rate"]["bss"] == pytest.approx(0.0, abs=1e-12)
    assert meta(first, "model_report")["n_test"] == 200


def test_champion_is_compared_on_the_same_window(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    tracker = Tracker.for_home(tmp_path, ui_base=ModelSettings().mlflow_ui)
    scored = []

    def publish(value, window, champion_score=None):
        def score(version):
            scored.append((version, window))
            return champion_score

        registered = register_model(
            tracker,
            name="m",
            run_name="r",
            params={},
            metrics={"log_loss": value},
            files={"model/x.txt": "x"},
            window=window,
        )
        decision = promote_champion(
            tracker, "m", registered.version, value=value, window=window, score_version=score
        )
        return SimpleNamespace(version=registered.version, decision=decision)

    assert publish(0.69, "w1").decision["promoted"]
    worse = publish(0.70, "w1")
    assert not worse.decision["promoted"] and tracker.champion("m")[0] == "1"
    assert scored == []  # the champion already had a value for w1
    # A new window: the champion is scored on it first, then compared like for like.
    better = publish(0.68, "w2", champion_score=0.695)
    assert scored == [("1", "w2")]
    assert better.decision["promoted"] and tracker.champion("m")[0] == better.version
    assert better.decision["champion_value"] == pytest.approx(0.695)
