"""MLflow model registry: registered model versions, their tags and the ``champion`` and
``challenger`` aliases (the challenger: a version published in shadow beside the champion,
``usecases.promote`` and ``usecases.shadow_promotion``).

Promotion (decided by ``core.evaluation.champion``, carried out by ``usecases.promote``) is
guarded by evaluations recorded as model-version tags: ``window`` holds the test window a version
was evaluated on, and ``eval_tag(metric, window)`` the value of ``metric`` on that window
(``evaluation_tags`` writes it, ``recorded_evaluation`` reads it back). MLflow tag keys may not
contain ``@``, so the ``metric@window`` key is spelled ``metric/window`` (see ``eval_tag``).
Artifacts are fetched back as bytes: nothing here unpickles.

A version registered from a run with a logged MLflow model (``RunInfo.model_id``) has that
model as its ``source`` (the logged model's artifact location), so ``models:/NAME/VERSION`` and
``models:/NAME@champion`` load with ``mlflow.pyfunc.load_model``; the files it was packaged from
are the model's ``artifacts/{file}``. An older version (or one registered from a run without a
model) points at the run's ``model/`` folder. ``download_file`` reads ``model/{file}`` from
either.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from levibot_pipelines.adapters.run_log import RunInfo, relative_artifact_path

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
WINDOW_TAG = "window"
MODEL_DIR = "model"  # the run folder a model's files were logged under before logged models
LOGGED_MODEL_FILES = "artifacts"  # where a logged pyfunc model keeps those files
_BAD_TAG_CHARS = re.compile(r"[^\w.\-/ ]")


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


def evaluation_tags(*, metric: str, window: str, value: float) -> dict[str, str]:
    """The version tag that records ``value`` of ``metric`` on test ``window``
    (``{eval_tag(metric, window): repr(float(value))}``), for ``VersionRegistry.tag_version``."""
    return {eval_tag(metric, window): repr(float(value))}


def recorded_evaluation(tags: Mapping[str, str], *, metric: str, window: str) -> float | None:
    """The value of ``metric`` on ``window`` recorded in a version's ``tags``, or ``None``."""
    recorded = tags.get(eval_tag(metric, window))
    return None if recorded is None else float(recorded)


class VersionRegistry:
    """Registered model versions, their tags and the ``champion`` / ``challenger`` aliases: the
    half of ``adapters.tracking.Tracker`` that registers. It reads and writes; whether an alias
    should move is decided elsewhere (``core.evaluation.champion``,
    ``core.evaluation.shadow_rule``)."""

    client: MlflowClient

    def register_version(
        self,
        model_name: str,
        run: RunInfo,
        artifact_path: str = "model",
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Register a new version of ``model_name`` from ``run``: its logged MLflow model when
        it has one (``run.model_id``; ``artifact_path`` is then unused), else its
        ``artifact_path`` directory.

        Creates the registered model on first use. Returns the version string (``"1"``, ...).
        """
        try:
            self.client.create_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        if run.model_id is not None:
            # The logged model's own location, not ``models:/{model_id}``: the sqlite registry
            # resolves that URI through the global tracking URI, which ``Tracker`` never sets.
            source = self.client.get_logged_model(run.model_id).artifact_location
        else:
            source = f"{run.artifact_uri.rstrip('/')}/{relative_artifact_path(artifact_path)}"
        version = self.client.create_model_version(
            model_name,
            source=source,
            run_id=run.run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
            model_id=run.model_id,
        )
        log.info("registered %s version %s from run %s", model_name, version.version, run.run_id)
        return str(version.version)

    def tag_version(self, model_name: str, version: str, tags: Mapping[str, str]) -> None:
        """Set ``tags`` (string values) on ``model_name`` version ``version``."""
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, str(version), key, value)

    def alias_version(self, model_name: str, alias: str) -> tuple[str, dict[str, str]] | None:
        """The version holding ``alias`` of ``model_name`` and its tags, or ``None`` (no such
        alias, or no such registered model)."""
        try:
            registered = self.client.get_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        version = registered.aliases.get(alias)
        if version is None:
            return None
        return str(version), dict(self.client.get_model_version(model_name, str(version)).tags)

    def champion(self, model_name: str) -> tuple[str, dict[str, str]] | None:
        """The version holding the ``champion`` alias and its tags, or ``None``."""
        return self.alias_version(model_name, CHAMPION_ALIAS)

    def set_champion(self, model_name: str, version: str) -> None:
        """Point the ``champion`` alias of ``model_name`` at ``version``."""
        self.client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))

    def challenger(self, model_name: str) -> tuple[str, dict[str, str]] | None:
        """The version holding the ``challenger`` alias and its tags, or ``None``."""
        return self.alias_version(model_name, CHALLENGER_ALIAS)

    def set_challenger(self, model_name: str, version: str) -> None:
        """Point the ``challenger`` alias of ``model_name`` at ``version``."""
        self.client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, str(version))

    def remove_challenger(self, model_name: str) -> None:
        """Remove the ``challenger`` alias of ``model_name`` (nothing when it has none)."""
        if self.challenger(model_name) is not None:
            self.client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)

    def download_file(self, model_name: str, version: str, path: str) -> bytes:
        """Bytes of artifact ``path`` of ``model_name`` version ``version``, relative to the root
        of the run that produced it (e.g. ``"model/state_dict.pt"``). A file of the version's
        model, ``model/{file}``, is read from the logged model (its ``artifacts/{file}``) when the
        version has one, else from the run, so older versions keep loading."""
        rel = relative_artifact_path(path)
        model_version = self.client.get_model_version(model_name, str(version))
        with tempfile.TemporaryDirectory(prefix="levibot-dl-") as tmp:
            local = Path(self._download(model_version, rel, tmp))
            if not local.is_file():
                raise ValueError(f"{path!r} of {model_name} version {version} is not a file")
            return local.read_bytes()

    def _download(self, model_version: ModelVersion, rel: PurePosixPath, dst: str) -> str:
        """Local path of ``rel`` downloaded into ``dst`` (see ``download_file``). A version's
        ``source`` holding an ``MLmodel`` file is a logged model (the sqlite registry does not
        keep a version's ``model_id``, so the source itself says)."""
        if rel.parts[0] == MODEL_DIR and model_version.source:
            repo = get_artifact_repository(
                model_version.source, tracking_uri=self.client.tracking_uri
            )
            if MLMODEL_FILE_NAME in {f.path for f in repo.list_artifacts()}:
                inside = PurePosixPath(LOGGED_MODEL_FILES, *rel.parts[1:])
                return repo.download_artifacts(str(inside), dst)
        if not model_version.run_id:
            raise ValueError(
                f"{model_version.name} version {model_version.version} has no run to download from"
            )
        return self.client.download_artifacts(model_version.run_id, str(rel), dst)
