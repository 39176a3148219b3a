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

from levibot_pipelines.adapters.tracking import (  # noqa: E402
    MAX_PARAM_VALUE_LENGTH,
    RunInfo,
    Tracker,
    eval_tag,
    flatten_params,
)

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


@pytest.fixture(scope="module")
def reader(tracker: Tracker) -> MlflowClient:
    """An independent client on the same store, to read back what the tracker wrote."""
    return MlflowClient(tracking_uri=tracker.tracking_uri)


def _run(tracker: Tracker, name: str, payload: str = "weights") -> RunInfo:
    return tracker.log_training_run(
        run_name=name, params={"seed": 1}, metrics={}, files={"model/weights.txt": payload}
    )


def test_for_home_puts_store_and_artifacts_under_home(tracker: Tracker, home: Path) -> None:
    run = _run(tracker, "layout")
    assert (home / "mlflow.db").is_file()
    assert tracker.tracking_uri == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert run.artifact_uri.startswith((home / "mlartifacts").resolve().as_uri())
    assert run.url == f"http://mlflow.test:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}"


def test_global_tracking_uri_untouched(tracker: Tracker, tmp_path: Path) -> None:
    before = mlflow.get_tracking_uri()
    other = Tracker(tracker.tracking_uri, tmp_path / "other-artifacts", experiment="other")
    run = _run(other, "other")
    assert mlflow.get_tracking_uri() == before
    assert other.experiment_id != tracker.experiment_id
    assert run.artifact_uri.startswith((tmp_path / "other-artifacts").resolve().as_uri())
    assert Tracker(tracker.tracking_uri, None, "other").experiment_id == other.experiment_id


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
    run = _run(tracker, "reg")
    version = tracker.register_version("reg-model", run, tags={"symbol": "ETHUSDT"})
    assert version == "1"
    assert tracker.register_version("reg-model", run) == "2"
    mv = reader.get_model_version("reg-model", version)
    assert mv.source == f"{run.artifact_uri}/model"
    assert mv.run_id == run.run_id
    assert mv.tags["symbol"] == "ETHUSDT"
    assert tracker.champion("reg-model") is None
    assert tracker.champion("no-such-model") is None


def test_promotion_lower_is_better(tracker: Tracker, reader: MlflowClient) -> None:
    name = "deep-lower"
    versions = [tracker.register_version(name, _run(tracker, f"{name}-{i}")) for i in range(4)]

    def promote(version: str, value: float) -> dict:
        return tracker.promote_if_no_worse(
            name, version, metric="log_loss", value=value, higher_is_better=False, window=WINDOW_A
        )

    first = promote(versions[0], 0.69)
    assert first["promoted"] and first["reason"] == "promoted: no champion yet"
    assert first["champion_version"] is None
    assert tracker.champion(name)[0] == versions[0]

    worse = promote(versions[1], 0.70)
    assert worse == {
        "promoted": False,
        "reason": worse["reason"],
        "champion_version": versions[0],
        "new_version": versions[1],
        "champion_value": 0.69,
        "new_value": 0.70,
    }
    assert worse["reason"].startswith("kept champion: log_loss 0.7 worse than champion 0.69")
    assert tracker.champion(name)[0] == versions[0]
    tags = reader.get_model_version(name, versions[1]).tags
    assert tags["decision"] == worse["reason"]
    assert tags["promoted"] == "false"
    assert tags["compared_to_version"] == versions[0]
    assert float(tags["champion_value"]) == 0.69
    assert float(tags["new_value"]) == 0.70
    assert tags["window"] == WINDOW_A
    assert float(tags[eval_tag("log_loss", WINDOW_A)]) == 0.70

    better = promote(versions[2], 0.65)
    assert better["promoted"] and better["champion_version"] == versions[0]
    champion_version, champion_tags = tracker.champion(name)
    assert champion_version == versions[2]
    assert champion_tags["promoted"] == "true"

    tie = promote(versions[3], 0.65)
    assert tie["promoted"], "an equal value is no worse"
    assert tracker.champion(name)[0] == versions[3]


def test_promotion_higher_is_better_and_nan(tracker: Tracker) -> None:
    name = "lgbm-higher"
    v1, v2, v3 = (tracker.register_version(name, _run(tracker, f"{name}-{i}")) for i in range(3))
    kw = {"metric": "auc", "higher_is_better": True, "window": WINDOW_A}
    assert tracker.promote_if_no_worse(name, v1, value=0.55, **kw)["promoted"]
    assert not tracker.promote_if_no_worse(name, v2, value=0.54, **kw)["promoted"]
    nan = tracker.promote_if_no_worse(name, v3, value=float("nan"), **kw)
    assert not nan["promoted"] and "NaN" in nan["reason"]
    assert tracker.promote_if_no_worse(name, v3, value=0.56, **kw)["promoted"]
    assert tracker.champion(name)[0] == v3


def test_different_window_is_not_compared_blindly(tracker: Tracker, reader: MlflowClient) -> None:
    name = "deep-windows"
    v1, v2 = (tracker.register_version(name, _run(tracker, f"{name}-{i}")) for i in range(2))
    kw = {"metric": "log_loss", "higher_is_better": False}
    tracker.promote_if_no_worse(name, v1, value=0.69, window=WINDOW_A, **kw)

    blind = tracker.promote_if_no_worse(name, v2, value=0.10, window=WINDOW_B, **kw)
    assert blind["promoted"] is False
    assert blind["reason"] == "kept champion: windows differ"
    assert blind["champion_version"] == v1 and blind["champion_value"] is None
    assert tracker.champion(name)[0] == v1
    assert reader.get_model_version(name, v2).tags["champion_value"] == ""

    # Once the champion is evaluated on window B too, the values are comparable.
    tracker.record_evaluation(name, v1, metric="log_loss", window=WINDOW_B, value=0.68)
    fair = tracker.promote_if_no_worse(name, v2, value=0.10, window=WINDOW_B, **kw)
    assert fair["promoted"] and fair["champion_value"] == 0.68
    assert tracker.champion(name)[0] == v2


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
