"""MLflow training runs: params, metrics per step and artifact files of one finished run.

Params may nest: they are flattened to ``a.b.c`` keys with string values, clipped to MLflow's
length limit, and the full nested params always go to the ``config.json`` artifact. Weights are
logged as plain files (torch ``state_dict`` bytes, config JSON, LightGBM text), or as an MLflow
model of the run (``ModelToLog``: an MLflow 3 logged model, written by the caller into a local
directory and uploaded as is).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param
from mlflow.models import Model

from levibot_pipelines.adapters.redact import redact_url

log = logging.getLogger(__name__)

CONFIG_ARTIFACT = "config.json"

# MLflow's limits (mlflow.utils.validation): param value length and entities per log_batch call.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_TRUNCATED = f"...[truncated, full value in {CONFIG_ARTIFACT}]"


@dataclass(frozen=True)
class RunInfo:
    """Where a logged training run lives: ids, its artifact root URI and its MLflow UI page."""

    run_id: str
    experiment_id: str
    artifact_uri: str
    url: str
    model_id: str | None = None  # the run's logged MLflow model (``ModelToLog``), if any


@dataclass(frozen=True)
class ModelToLog:
    """An MLflow model to log with a training run: ``write(path, mlflow_model)`` saves a whole
    MLflow model directory at ``path`` (e.g. ``mlflow.pyfunc.save_model(path, ...,
    mlflow_model=mlflow_model)``; ``mlflow_model`` carries the logged model's id and run id
    for its ``MLmodel`` file). ``name`` is the logged model's name in the MLflow UI."""

    name: str
    write: Callable[[Path, Model], None]


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested ``params`` as flat ``{"a.b.c": str(value)}``; an empty mapping becomes ``"{}"``."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = "{}" if isinstance(value, Mapping) else str(value)
    return flat


def relative_artifact_path(path: str) -> PurePosixPath:
    """``path`` as a relative artifact file path; ``ValueError`` for an absolute path, ``..``
    or a directory name."""
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts or rel.name in ("", "."):
        raise ValueError(f"artifact path must be a relative file path without '..', got {path!r}")
    return rel


def _clip_param(key: str, value: str) -> str:
    if len(value) <= MAX_PARAM_VALUE_LENGTH:
        return value
    log.info("param %s has %d chars; logged truncated", key, len(value))
    return value[: MAX_PARAM_VALUE_LENGTH - len(_TRUNCATED)] + _TRUNCATED


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _log_values(
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    epoch_metrics: list[dict[str, float]] | None,
) -> None:
    """Flattened, clipped ``params``; ``metrics`` at step 0 and ``epoch_metrics`` per epoch."""
    now = int(time.time() * 1000)
    param_list = [Param(k, _clip_param(k, v)) for k, v in flatten_params(params).items()]
    metric_list = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i, row in enumerate(epoch_metrics or []):
        step = int(row.get("epoch", i))
        metric_list += [Metric(k, float(v), now, step) for k, v in row.items() if k != "epoch"]
    for chunk in _chunks(param_list, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=chunk, synchronous=True)
    for chunk in _chunks(metric_list, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk, synchronous=True)


def _log_files(
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, Any],
    files: Mapping[str, bytes | str],
    paths: Mapping[str, PurePosixPath],
) -> None:
    """``files`` (at ``paths``) and the full nested ``params`` as ``config.json``, in one upload."""
    with tempfile.TemporaryDirectory(prefix="levibot-run-") as tmp:
        staging = Path(tmp)
        config = json.dumps(params, indent=2, sort_keys=True, default=str)
        (staging / CONFIG_ARTIFACT).write_text(config, encoding="utf-8")
        for path, content in files.items():
            dest = staging.joinpath(*paths[path].parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                dest.write_bytes(content)
            else:
                dest.write_text(content, encoding="utf-8")
        client.log_artifacts(run_id, str(staging))


def _log_model(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    model: ModelToLog,
    tags: Mapping[str, str],
) -> str:
    """Create a logged model of run ``run_id``, write it (``model.write``) into a temporary
    directory, upload that and mark the model READY (FAILED when anything fails). Returns the
    logged model's id. The same steps as ``mlflow.<flavor>.log_model``, through ``client``
    rather than the global tracking URI and active run."""
    logged = client.create_logged_model(
        experiment_id, name=model.name, source_run_id=run_id, tags=dict(tags)
    )
    try:
        with tempfile.TemporaryDirectory(prefix="levibot-model-") as tmp:
            path = Path(tmp) / "model"
            meta = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run_id,
                model_id=logged.model_id,
            )
            model.write(path, meta)
            client.log_model_artifacts(logged.model_id, str(path))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id


class RunLog:
    """Training runs of one experiment: the half of ``adapters.tracking.Tracker`` that logs."""

    client: MlflowClient
    experiment_id: str
    ui_base: str

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str:
        """MLflow UI page of a run."""
        return f"{self.ui_base}/#/experiments/{experiment_id or self.experiment_id}/runs/{run_id}"

    def log_training_run(
        self,
        *,
        run_name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        epoch_metrics: list[dict[str, float]] | None = None,
        files: Mapping[str, bytes | str] | None = None,
        tags: Mapping[str, str] | None = None,
        model: ModelToLog | None = None,
    ) -> RunInfo:
        """Log one finished training run and return where it lives.

        ``params`` may nest; keys are flattened with ``.`` and values stringified, values longer
        than MLflow's 6000 characters are truncated, and the full nested ``params`` always go to
        the ``config.json`` artifact. ``metrics`` are logged at step 0. ``epoch_metrics[i]`` is
        logged at ``step = epoch`` (its ``"epoch"`` entry when present, else ``i``).
        ``files`` maps relative artifact paths (``"model/state_dict.pt"``) to bytes or text.
        ``model``, when given, is logged as the run's MLflow model (``RunInfo.model_id``).
        A failure while logging marks the run FAILED and re-raises.
        """
        files = dict(files or {})
        paths = {path: relative_artifact_path(path) for path in files}
        if PurePosixPath(CONFIG_ARTIFACT) in paths.values():
            raise ValueError(f"artifact path {CONFIG_ARTIFACT!r} is reserved for the run's params")
        run = self.client.create_run(self.experiment_id, tags=dict(tags or {}), run_name=run_name)
        run_id = run.info.run_id
        model_id = None
        try:
            _log_values(self.client, run_id, params, metrics, epoch_metrics)
            _log_files(self.client, run_id, params, files, paths)
            if model is not None:
                model_id = _log_model(
                    self.client, run.info.experiment_id, run_id, model, dict(tags or {})
                )
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        info = RunInfo(
            run_id=run_id,
            experiment_id=run.info.experiment_id,
            artifact_uri=run.info.artifact_uri,
            url=self.run_url(run_id, run.info.experiment_id),
            model_id=model_id,
        )
        log.info("logged run %s (%s): %s", run_name, run_id, redact_url(info.url))
        return info
