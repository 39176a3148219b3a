"""MLflow tracking and model registry: training runs, model versions, the ``champion`` alias.

Every call goes through one ``MlflowClient`` bound to the tracking URI given to ``Tracker``; the
global ``mlflow`` state (``mlflow.set_tracking_uri``, active runs) is never read or changed, so
other code in the same process may use another store. Weights are logged as plain files (torch
``state_dict`` bytes, config JSON, LightGBM text) and fetched back as bytes: nothing here
unpickles.

Promotion (decided by ``core.evaluation.champion``, carried out by ``usecases.train``) is guarded
by evaluations recorded as model-version tags: ``window`` holds the test window a version was
evaluated on, and ``eval_tag(metric, window)`` the value of ``metric`` on that window. MLflow tag
keys may not contain ``@``, so the ``metric@window`` key is spelled ``metric/window`` (see
``eval_tag``).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from levibot_pipelines.adapters.home import mlartifacts_dir

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
WINDOW_TAG = "window"
CONFIG_ARTIFACT = "config.json"
DEFAULT_UI_BASE = "http://127.0.0.1:5000"

# MLflow's limits (mlflow.utils.validation): param value length and entities per log_batch call.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_TRUNCATED = f"...[truncated, full value in {CONFIG_ARTIFACT}]"
_BAD_TAG_CHARS = re.compile(r"[^\w.\-/ ]")


@dataclass(frozen=True)
class RunInfo:
    """Where a logged training run lives: ids, its artifact root URI and its MLflow UI page."""

    run_id: str
    experiment_id: str
    artifact_uri: str
    url: str


def eval_tag(metric: str, window: str) -> str:
    """Model-version tag key for the value of ``metric`` on test ``window``.

    ``f"{metric}/{window}"`` with every character MLflow refuses in a tag key (anything but
    alphanumerics, ``_ . - /`` and space; ``:`` is refused on Windows) replaced by ``_``, e.g.
    ``eval_tag("ece", "2025-01-01T00:00/2025-03-01T00:00") ==
    "ece/2025-01-01T00_00/2025-03-01T00_00"``.
    """
    if not metric or not window:
        raise ValueError(f"metric and window must be non-empty, got {metric!r} and {window!r}")
    return _BAD_TAG_CHARS.sub("_", f"{metric}/{window}")


def recorded_evaluation(tags: Mapping[str, str], *, metric: str, window: str) -> float | None:
    """The value of ``metric`` on ``window`` recorded in a version's ``tags``, or ``None``."""
    recorded = tags.get(eval_tag(metric, window))
    return None if recorded is None else float(recorded)


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


def _clip_param(key: str, value: str) -> str:
    if len(value) <= MAX_PARAM_VALUE_LENGTH:
        return value
    log.info("param %s has %d chars; logged truncated", key, len(value))
    return value[: MAX_PARAM_VALUE_LENGTH - len(_TRUNCATED)] + _TRUNCATED


def _artifact_path(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts or rel.name in ("", "."):
        raise ValueError(f"artifact path must be a relative file path without '..', got {path!r}")
    return rel


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _ensure_experiment(client: MlflowClient, name: str, location: str | None) -> str:
    """Id of experiment ``name``, created (at artifact ``location``) or restored as needed."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            # Another process created it between the lookup and the create.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        log.warning("experiment %s was deleted; restoring it", name)
        client.restore_experiment(found.experiment_id)
    if location is not None and found.artifact_location.rstrip("/") != location.rstrip("/"):
        log.warning(
            "experiment %s keeps its artifact location %s (asked for %s)",
            name,
            found.artifact_location,
            location,
        )
    return found.experiment_id


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
    """Training runs of one experiment: the half of ``Tracker`` that logs."""

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
        paths = {path: _artifact_path(path) for path in files}
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
        log.info("logged run %s (%s): %s", run_name, run_id, info.url)
        return info


class VersionRegistry:
    """Registered model versions, their tags and the ``champion`` alias: the half of ``Tracker``
    that registers. It reads and writes; whether the alias should move is decided elsewhere
    (``core.evaluation.champion``)."""

    client: MlflowClient

    def register_version(
        self,
        model_name: str,
        run: RunInfo,
        artifact_path: str = "model",
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Register ``run``'s ``artifact_path`` directory as a new version of ``model_name``.

        Creates the registered model on first use. Returns the version string (``"1"``, ...).
        """
        try:
            self.client.create_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        rel = _artifact_path(artifact_path)
        version = self.client.create_model_version(
            model_name,
            source=f"{run.artifact_uri.rstrip('/')}/{rel}",
            run_id=run.run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
        )
        log.info("registered %s version %s from run %s", model_name, version.version, run.run_id)
        return str(version.version)

    def record_evaluation(
        self, model_name: str, version: str, *, metric: str, window: str, value: float
    ) -> None:
        """Store ``value`` of ``metric`` on test ``window`` as the version tag ``eval_tag``.

        Use it to re-evaluate the champion on a new window before a promotion decision.
        """
        self.tag_version(model_name, version, {eval_tag(metric, window): repr(float(value))})

    def tag_version(self, model_name: str, version: str, tags: Mapping[str, str]) -> None:
        """Set ``tags`` (string values) on ``model_name`` version ``version``."""
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, str(version), key, value)

    def champion(self, model_name: str) -> tuple[str, dict[str, str]] | None:
        """The version holding the ``champion`` alias and its tags, or ``None``."""
        try:
            registered = self.client.get_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        version = registered.aliases.get(CHAMPION_ALIAS)
        if version is None:
            return None
        return str(version), dict(self.client.get_model_version(model_name, str(version)).tags)

    def set_champion(self, model_name: str, version: str) -> None:
        """Point the ``champion`` alias of ``model_name`` at ``version``."""
        self.client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))

    def download_file(self, model_name: str, version: str, path: str) -> bytes:
        """Bytes of artifact ``path`` (relative to the run root, e.g. ``"model/state_dict.pt"``)
        of the run that produced ``model_name`` version ``version``."""
        rel = _artifact_path(path)
        model_version = self.client.get_model_version(model_name, str(version))
        if not model_version.run_id:
            raise ValueError(f"{model_name} version {version} has no run to download from")
        with tempfile.TemporaryDirectory(prefix="levibot-dl-") as tmp:
            local = Path(self.client.download_artifacts(model_version.run_id, str(rel), tmp))
            if not local.is_file():
                raise ValueError(f"{path!r} of {model_name} version {version} is not a file")
            return local.read_bytes()


class Tracker(RunLog, VersionRegistry):
    """Training runs (``RunLog``) and registered model versions with the ``champion`` alias
    (``VersionRegistry``) in one MLflow store, through one ``MlflowClient``.

    ``tracking_uri`` is a database URI (``sqlite:////abs/path/mlflow.db``) or a tracking server
    URL; the model registry uses the same URI. ``artifact_root`` (a local directory) becomes the
    artifact location of a newly created experiment; ``None`` leaves it to the store or server.
    An existing experiment keeps its own artifact location. ``ui_base`` prefixes run URLs.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_root: Path | None,
        experiment: str = "levibot",
        *,
        ui_base: str = DEFAULT_UI_BASE,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.ui_base = ui_base.rstrip("/")
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        location = None
        if artifact_root is not None:
            root = Path(artifact_root).resolve()
            root.mkdir(parents=True, exist_ok=True)
            location = root.as_uri()
        self.experiment_id = _ensure_experiment(self.client, experiment, location)

    @classmethod
    def for_home(
        cls, home: Path, experiment: str = "levibot", *, ui_base: str = DEFAULT_UI_BASE
    ) -> Tracker:
        """Embedded store: sqlite at ``home/mlflow.db``, artifacts under ``home/mlartifacts``."""
        home = Path(home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        return cls(
            f"sqlite:///{home / 'mlflow.db'}",
            mlartifacts_dir(home),
            experiment,
            ui_base=ui_base,
        )
