"""MLflow tracking and model registry in one object: ``Tracker``.

Every call goes through one ``MlflowClient`` bound to the tracking URI given to ``Tracker``; the
global ``mlflow`` state (``mlflow.set_tracking_uri``, active runs) is never read or changed, so
other code in the same process may use another store. Logging training runs is
``adapters.run_log``; registered versions, their evaluation tags and the ``champion`` alias are
``adapters.model_versions``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from levibot_pipelines.adapters.home import mlartifacts_dir, mlflow_tracking_uri
from levibot_pipelines.adapters.model_versions import VersionRegistry
from levibot_pipelines.adapters.redact import redact_url
from levibot_pipelines.adapters.run_log import RunLog

log = logging.getLogger(__name__)


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
            redact_url(found.artifact_location),
            redact_url(location),
        )
    return found.experiment_id


class Tracker(RunLog, VersionRegistry):
    """Training runs (``RunLog``) and registered model versions with the ``champion`` alias
    (``VersionRegistry``) in one MLflow store, through one ``MlflowClient``.

    ``tracking_uri`` is a database URI (``sqlite:////abs/path/mlflow.db``) or a tracking server
    URL; the model registry uses the same URI. ``artifact_root`` (a local directory) becomes the
    artifact location of a newly created experiment; ``None`` leaves it to the store or server.
    An existing experiment keeps its own artifact location. ``ui_base`` prefixes run URLs (no
    default: the caller passes the configured ``LEVIBOT_MLFLOW_UI``).
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_root: Path | None,
        experiment: str = "levibot",
        *,
        ui_base: str,
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
    def for_home(cls, home: Path, experiment: str = "levibot", *, ui_base: str) -> Tracker:
        """Embedded store: sqlite at ``home/mlflow.db``, artifacts under ``home/mlartifacts``."""
        home = Path(home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        return cls(
            mlflow_tracking_uri(home),
            mlartifacts_dir(home),
            experiment,
            ui_base=ui_base,
        )
