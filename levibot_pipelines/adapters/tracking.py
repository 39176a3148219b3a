"""MLflow tracking and model registry in one object: ``Tracker``.

Every call goes through one ``MlflowClient`` bound to the tracking URI given to ``Tracker``; the
global ``mlflow`` state (``mlflow.set_tracking_uri``, active runs) is never read or changed, so
other code in the same process may use another store. Logging training runs is
``adapters.run_log``; registered versions, their evaluation tags and the ``champion`` alias are
``adapters.model_versions``.

Where the artifacts go is decided from the tracking URI alone (``experiment_artifact_location``):
a local store (sqlite, ``file:``, a path; the laptop default ``$LEVIBOT_HOME/mlflow.db``) keeps
them under a local directory of this machine (``$LEVIBOT_HOME/mlartifacts``), as it always has;
a tracking server (``http(s)://``) decides itself, so every host reads the same files (with
``mlflow server --serve-artifacts``: ``mlflow-artifacts:/{experiment_id}/...``, proxied by the
server). Against a server, an experiment whose artifact location is a local path is refused
(``LocalArtifactsOnServerError``): no other host could load its models.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from levibot_pipelines.adapters.home import mlartifacts_dir, mlflow_tracking_uri
from levibot_pipelines.adapters.model_versions import VersionRegistry
from levibot_pipelines.adapters.redact import redact_url
from levibot_pipelines.adapters.run_log import RunLog

log = logging.getLogger(__name__)


SERVER_SCHEMES = ("http", "https")


def is_tracking_server(tracking_uri: str) -> bool:
    """Whether ``tracking_uri`` is a tracking server URL (``http://`` or ``https://``) rather
    than a store this process opens itself (``sqlite:///...``, ``file:///...``, a path, or a
    database URL such as ``postgresql://...``)."""
    return urlparse(tracking_uri).scheme.lower() in SERVER_SCHEMES


def experiment_artifact_location(tracking_uri: str, artifact_root: Path | None) -> str | None:
    """The artifact location to create the experiment with: ``None`` for a tracking server
    (``is_tracking_server``: the server chooses, e.g. ``mlflow-artifacts:/`` when it serves
    artifacts) or when no ``artifact_root`` is given; else the ``file://`` URI of the absolute
    ``artifact_root`` (a store opened in process, e.g. ``sqlite:////home/u/.levibot/mlflow.db``
    with ``/home/u/.levibot/mlartifacts`` -> ``file:///home/u/.levibot/mlartifacts``)."""
    if artifact_root is None or is_tracking_server(tracking_uri):
        return None
    return Path(artifact_root).resolve().as_uri()


def _is_local_path(location: str) -> bool:
    """Whether an artifact ``location`` is a path on one machine (``file:`` or no scheme)."""
    scheme = urlparse(location).scheme.lower()
    return scheme == "file" or scheme == "" or (len(scheme) == 1 and location[1:2] == ":")


class LocalArtifactsOnServerError(ValueError):
    """An experiment of a tracking server keeps its artifacts at a path of one machine."""


def _check_shared(name: str, tracking_uri: str, location: str) -> None:
    """``LocalArtifactsOnServerError`` naming experiment ``name`` and its ``location`` when the
    store is a tracking server and ``location`` a local path: runs would write their models
    there, on whichever machine trains, and no other host could load them."""
    if is_tracking_server(tracking_uri) and _is_local_path(location):
        raise LocalArtifactsOnServerError(
            f"MLflow experiment {name!r} on the tracking server {redact_url(tracking_uri)} keeps "
            f"its artifacts at the local path {location}: models logged there could not be "
            "loaded from another host. Start the server with --serve-artifacts (artifacts then "
            f"live at mlflow-artifacts:/) and rename or delete experiment {name!r} on it (a new "
            "one is created with the server's artifact location), or point "
            "LEVIBOT_MLFLOW_TRACKING_URI at the local store again."
        )


def _ensure_experiment(
    client: MlflowClient, name: str, location: str | None, tracking_uri: str
) -> str:
    """Id of experiment ``name``, created (at artifact ``location``; ``None``: the store's
    default) or restored as needed. On a tracking server its artifact location must not be a
    local path (``_check_shared``)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            # Another process created it between the lookup and the create.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        found = client.get_experiment_by_name(name)
        if found is None:
            raise MlflowException(f"experiment {name!r} was created but cannot be found")
    _check_shared(name, tracking_uri, found.artifact_location)
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
    URL; the model registry uses the same URI. ``artifact_root`` (a local directory, created when
    used) becomes the artifact location of a newly created experiment in a store opened in
    process; a tracking server ignores it and chooses (``experiment_artifact_location``), and
    refuses an experiment whose artifacts are at a local path (``LocalArtifactsOnServerError``).
    ``None`` leaves it to the store or server. An existing experiment keeps its own artifact
    location. ``ui_base`` prefixes run URLs (no default: the caller passes the configured
    ``LEVIBOT_MLFLOW_UI``).
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
        location = experiment_artifact_location(tracking_uri, artifact_root)
        if location is not None:
            Path(artifact_root).resolve().mkdir(parents=True, exist_ok=True)
        self.experiment_id = _ensure_experiment(self.client, experiment, location, tracking_uri)

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
