"""MLflow training runs: params, metrics per step and artifact files of one finished run.

Params may nest: they are flattened to ``a.b.c`` keys with string values, clipped to MLflow's
length limit, and the full nested params always go to the ``config.json`` artifact. Weights are
logged as plain files (torch ``state_dict`` bytes, config JSON, LightGBM text).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

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
    ) -> RunInfo:
        """Log one finished training run and return where it lives.

        ``params`` may nest; keys are flattened with ``.`` and values stringified, values longer
        than MLflow's 6000 characters are truncated, and the full nested ``params`` always go to
        the ``config.json`` artifact. ``metrics`` are logged at step 0. ``epoch_metrics[i]`` is
        logged at ``step = epoch`` (its ``"epoch"`` entry when present, else ``i``).
        ``files`` maps relative artifact paths (``"model/state_dict.pt"``) to bytes or text.
        A failure while logging marks the run FAILED and re-raises.
        """
        files = dict(files or {})
        paths = {path: relative_artifact_path(path) for path in files}
        if PurePosixPath(CONFIG_ARTIFACT) in paths.values():
            raise ValueError(f"artifact path {CONFIG_ARTIFACT!r} is reserved for the run's params")
        run = self.client.create_run(self.experiment_id, tags=dict(tags or {}), run_name=run_name)
        run_id = run.info.run_id
        try:
            _log_values(self.client, run_id, params, metrics, epoch_metrics)
            _log_files(self.client, run_id, params, files, paths)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        info = RunInfo(
            run_id=run_id,
            experiment_id=run.info.experiment_id,
            artifact_uri=run.info.artifact_uri,
            url=self.run_url(run_id, run.info.experiment_id),
        )
        log.info("logged run %s (%s): %s", run_name, run_id, redact_url(info.url))
        return info
