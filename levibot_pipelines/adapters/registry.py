"""Model artifacts in the MLflow registry: how each model is packaged, registered as a model
version, and loaded back (no pickle: LightGBM text, torch ``state_dict`` loaded with
``weights_only=True``, JSON for the rest)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import lightgbm as lgb

from levibot_pipelines.adapters.run_log import RunInfo
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.models.calibration import Calibrator
from levibot_pipelines.core.models.lgbm import booster_from_text, booster_to_text
from levibot_pipelines.core.models.transformer import (
    LevibotTransformer,
    load_model,
    save_model,
    state_dict_from_bytes,
    state_dict_to_bytes,
)


def model_name(kind: str, symbol: str) -> str:
    """Registered model name, e.g. ``levibot-lgbm-BTCUSDT``."""
    return f"levibot-{kind}-{symbol}"


def lgbm_files(booster: lgb.Booster, calibrator: Calibrator, meta: dict) -> dict[str, str]:
    return {
        "model/lgbm.txt": booster_to_text(booster),
        "model/calibrator.json": json.dumps(calibrator.to_dict()),
        "model/meta.json": json.dumps(meta),
    }


def transformer_files(model: LevibotTransformer, calibrator: Calibrator, meta: dict) -> dict:
    state, config = save_model(model)
    return {
        "model/state_dict.pt": state_dict_to_bytes(state),
        "model/config.json": json.dumps(config),
        "model/calibrator.json": json.dumps(calibrator.to_dict()),
        "model/meta.json": json.dumps(meta),
    }


def _json(tracker: Tracker, name: str, version: str, path: str) -> dict:
    return json.loads(tracker.download_file(name, version, path))


def load_lgbm(tracker: Tracker, name: str, version: str) -> tuple[lgb.Booster, Calibrator]:
    text = tracker.download_file(name, version, "model/lgbm.txt").decode()
    calibrator = Calibrator.from_dict(_json(tracker, name, version, "model/calibrator.json"))
    return booster_from_text(text), calibrator


def load_transformer(
    tracker: Tracker, name: str, version: str
) -> tuple[LevibotTransformer, Calibrator]:
    return transformer_from_files(download_transformer(tracker, name, version))


DEEP_FILES = ("state_dict.pt", "config.json", "calibrator.json")


def download_transformer(tracker: Tracker, name: str, version: str) -> dict[str, bytes]:
    """The registered Transformer's files, by name: ``DEEP_FILES``."""
    return {f: tracker.download_file(name, version, f"model/{f}") for f in DEEP_FILES}


def transformer_from_files(files: dict[str, bytes]) -> tuple[LevibotTransformer, Calibrator]:
    """Rebuild the Transformer (``weights_only`` load) and its calibrator from ``DEEP_FILES``."""
    model = load_model(
        state_dict_from_bytes(files["state_dict.pt"]), json.loads(files["config.json"])
    )
    return model, Calibrator.from_dict(json.loads(files["calibrator.json"]))


@dataclass(frozen=True)
class Registered:
    """A logged training run and the model version registered from its ``model/`` files."""

    run: RunInfo
    version: str


def register_model(
    tracker: Tracker,
    *,
    name: str,
    run_name: str,
    params: dict,
    metrics: dict[str, float],
    files: dict,
    window: str,
    epoch_metrics: list[dict] | None = None,
    tags: dict[str, str] | None = None,
) -> Registered:
    """Log the training run (``params``, ``metrics``, ``epoch_metrics``, ``files``, ``tags``) and
    register its ``model/`` directory as a new version of ``name``, tagged with the test
    ``window`` it was scored on. The champion alias is not touched (see ``usecases.promote``)."""
    run = tracker.log_training_run(
        run_name=run_name,
        params=params,
        metrics=metrics,
        epoch_metrics=epoch_metrics,
        files=files,
        tags=tags,
    )
    version = tracker.register_version(name, run, tags={"window": window})
    return Registered(run=run, version=version)
