"""Tracker against a real MLflow store: sqlite backend and artifacts in a temporary directory."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

# Telemetry must be off before mlflow is first imported (it starts its client on import).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import mlflow  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from levibot_pipelines.adapters.model_versions import (  # noqa: E402
    eval_tag,
    evaluation_tags,
    recorded_evaluation,
)
from levibot_pipelines.adapters.run_log import (  # noqa: E402
    MAX_PARAM_VALUE_LENGTH,
    flatten_params,
)
from levibot_pipelines.adapters.tracking import Tracker  # noqa: E402
from levibot_pipelines.settings import ModelSettings  # noqa: E402
from levibot_pipelines_tests.conftest import dummy_run  # noqa: E402

UI = ModelSettings().mlflow_ui  # the default LEVIBOT_MLFLOW_UI
WINDOW_A = "2025-01-01T00:00/2025-03-01T00:00"
WINDOW_B = "2025-02-01T00:00/2025-04-01T00:00"


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("levibot-home")


@pytest.fixture(scope="module")
def tracker(home: Path) -> Tracker:
    # One store per module: creating the sqlite schema takes seconds; tests use distinct models.
    return Tracker.for_home(home, ui_base="http://mlflow.test:5000/")


def test_for_home_puts_store_and_artifacts_under_home(tracker: Tracker, home: Path) -> None:
    run = dummy_run(tracker, "layout")
    assert (home / "mlflow.db").is_file()
    assert tracker.tracking_uri == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert run.artifact_uri.startswith((home / "mlartifacts").resolve().as_uri())
    assert run.url == f"http://mlflow.test:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}"


def test_global_tracking_uri_untouched(tracker: Tracker, tmp_path: Path) -> None:
    before = mlflow.get_tracking_uri()
    other = Tracker(
        tracker.tracking_uri, tmp_path / "other-artifacts", experiment="other", ui_base=UI
    )
    run = dummy_run(other, "other")
    assert mlflow.get_tracking_uri() == before
    assert other.experiment_id != tracker.experiment_id
    assert run.artifact_uri.startswith((tmp_path / "other-artifacts").resolve().as_uri())
    assert (
        Tracker(tracker.tracking_uri, None, "other", ui_base=UI).experiment_id
        == other.experiment_id
    )


def test_logged_run_reads_back(tracker: Tracker, reader: MlflowClient) -> None:
    long_value = "x" * (MAX_PARAM_VALUE_LENGTH + 10)
    params = {"model": {"d_model": 64, "heads": 4, "dropout": 0.1}, "seed": 7, "note": long_value}
    weights = bytes(range(256)) * 4
    run = tracker.log_training_run(
        run_name="deep-BTCUSDT",
        params=params,
        metrics={"auc": 0.61, "ece": 0.02},
        epoch_metrics=[
            {"epoch": 1, "loss": 0.9},
            {"epoch": 2, "loss": 0.7},
            {"epoch": 3, "loss": 0.6},
        ],
        files={"model/state_dict.pt": weights, "model/config.json": '{"d_model": 64}'},
        tags={"symbol": "BTCUSDT"},
    )
    got = reader.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "deep-BTCUSDT"
    assert got.data.tags["symbol"] == "BTCUSDT"
    assert got.data.params["model.d_model"] == "64"
    assert got.data.params["model.dropout"] == "0.1"
    assert got.data.params["seed"] == "7"
    note = got.data.params["note"]
    assert len(note) <= MAX_PARAM_VALUE_LENGTH and note.endswith("config.json]")
    assert got.data.metrics == {"auc": 0.61, "ece": 0.02, "loss": 0.6}
    history = reader.get_metric_history(run.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.9), (2, 0.7), (3, 0.6)]
    assert {f.path for f in reader.list_artifacts(run.run_id)} == {"config.json", "model"}
    assert {f.path for f in reader.list_artifacts(run.run_id, "model")} == {
        "model/config.json",
        "model/state_dict.pt",
    }
    config = json.loads(Path(reader.download_artifacts(run.run_id, "config.json")).read_text())
    assert config == params
    assert (
        Path(reader.download_artifacts(run.run_id, "model/state_dict.pt")).read_bytes() == weights
    )


def test_epoch_without_epoch_key_uses_position(tracker: Tracker, reader: MlflowClient) -> None:
    run = tracker.log_training_run(
        run_name="steps", params={}, metrics={}, epoch_metrics=[{"loss": 2.0}, {"loss": 1.0}]
    )
    history = reader.get_metric_history(run.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 2.0), (1, 1.0)]


def test_bad_artifact_paths_rejected_before_a_run_exists(tracker: Tracker) -> None:
    for path in ("../escape.txt", "/abs.txt", "", "config.json"):
        with pytest.raises(ValueError, match="artifact path"):
            tracker.log_training_run(run_name="bad", params={}, metrics={}, files={path: "x"})


def test_failure_while_logging_marks_run_failed(tracker: Tracker, reader: MlflowClient) -> None:
    with pytest.raises(TypeError):
        tracker.log_training_run(
            run_name="broken",
            params={},
            metrics={},
            files={"model/x.txt": 123},  # type: ignore[dict-item]
        )
    runs = reader.search_runs([tracker.experiment_id], "attributes.run_name = 'broken'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_flatten_params() -> None:
    assert flatten_params({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": {}, "f": None}) == {
        "a.b.c": "1",
        "a.d": "[1, 2]",
        "e": "{}",
        "f": "None",
    }


def test_eval_tag_is_a_valid_mlflow_key() -> None:
    assert eval_tag("ece", WINDOW_A) == "ece/2025-01-01T00_00/2025-03-01T00_00"
    assert eval_tag("auc", "2025-01-01T00:00+00:00/x") == "auc/2025-01-01T00_00_00_00/x"
    with pytest.raises(ValueError, match="non-empty"):
        eval_tag("ece", "")


def test_register_version_points_at_run_artifacts(tracker: Tracker, reader: MlflowClient) -> None:
    run = dummy_run(tracker, "reg")
    version = tracker.register_version("reg-model", run, tags={"symbol": "ETHUSDT"})
    assert version == "1"
    assert tracker.register_version("reg-model", run) == "2"
    mv = reader.get_model_version("reg-model", version)
    assert mv.source == f"{run.artifact_uri}/model"
    assert mv.run_id == run.run_id
    assert mv.tags["symbol"] == "ETHUSDT"
    assert tracker.champion("reg-model") is None
    assert tracker.champion("no-such-model") is None


def test_alias_and_tags_are_read_back(tracker: Tracker, reader: MlflowClient) -> None:
    name = "alias-model"
    v1, v2 = (tracker.register_version(name, dummy_run(tracker, f"{name}-{i}")) for i in range(2))
    tracker.set_champion(name, v1)
    tracker.tag_version(name, v1, {"decision": "by hand", "promoted": "true"})
    tracker.tag_version(name, v1, evaluation_tags(metric="log_loss", window=WINDOW_A, value=0.69))
    version, tags = tracker.champion(name)
    assert version == v1 and tags["decision"] == "by hand" and tags["promoted"] == "true"
    assert recorded_evaluation(tags, metric="log_loss", window=WINDOW_A) == 0.69
    assert recorded_evaluation(tags, metric="log_loss", window=WINDOW_B) is None
    tracker.set_champion(name, v2)
    assert tracker.champion(name)[0] == v2
    assert str(reader.get_registered_model(name).aliases["champion"]) == v2


def test_download_file_round_trips_a_state_dict(tracker: Tracker) -> None:
    torch.manual_seed(0)
    state = torch.nn.Linear(4, 2).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    run = tracker.log_training_run(
        run_name="torch",
        params={},
        metrics={},
        files={"model/state_dict.pt": buf.getvalue(), "model/config.json": "{}"},
    )
    version = tracker.register_version("torch-model", run)
    raw = tracker.download_file("torch-model", version, "model/state_dict.pt")
    assert raw == buf.getvalue()
    loaded = torch.load(io.BytesIO(raw), weights_only=True)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert tracker.download_file("torch-model", version, "model/config.json") == b"{}"
    with pytest.raises(ValueError, match="not a file"):
        tracker.download_file("torch-model", version, "model")
