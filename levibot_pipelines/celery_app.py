"""The Celery app of the cluster's workers (``LEVIBOT_EXECUTOR=celery``):

    celery -A levibot_pipelines.celery_app worker -Q cpu      # deploy/cluster/worker.sh cpu

Each task runs one Dagster step in the worker process, against the run's Dagster instance
(PostgreSQL, from the ``LEVIBOT_PG_*`` variables) and the code location imported here. The
broker, the result backend and every other Celery setting are the executor's own
(``defs/executors.CELERY_CONFIG``, ``LEVIBOT_CELERY_BROKER``/``_BACKEND``), so a worker can only
take the tasks the executor sends. Unlike ``dagster-celery worker start``, nothing is written to
a file: the URLs, which may hold a password, stay in the environment.
"""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from levibot_pipelines.defs.executors import CELERY_CONFIG
from levibot_pipelines.settings import Settings, SettingsError


def make_worker_app():
    """The worker's Celery app; ``SettingsError`` unless LEVIBOT_CELERY_BROKER and
    LEVIBOT_CELERY_BACKEND are set."""
    cluster = Settings.from_env().cluster
    if not (cluster.celery_broker and cluster.celery_backend):
        raise SettingsError(
            "a Celery worker needs LEVIBOT_CELERY_BROKER and LEVIBOT_CELERY_BACKEND "
            "(the executor's broker and result backend, e.g. redis://host:6379/0 and /1)"
        )
    executor = CeleryExecutor.for_cli(
        broker=cluster.celery_broker,
        backend=cluster.celery_backend,
        config_source=CELERY_CONFIG,
    )
    return make_app(executor.app_args())


app = make_worker_app()
execute_plan = create_task(app)
