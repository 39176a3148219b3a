"""Where steps run (``LEVIBOT_EXECUTOR``): the laptop's executors by default, the Celery
executor for every job with ``celery``, the Transformer steps tagged for the ``gpu`` queue, and
the settings that guard it."""

import dagster as dg
import pytest

from levibot_pipelines.defs.executors import (
    CELERY_CONFIG,
    CELERY_QUEUE_TAG,
    default_executor,
    small_job_executor,
)
from levibot_pipelines.settings import Settings, SettingsError

BROKER = "redis://:s3cr3t-password@redis-host:6379/0"
BACKEND = "redis://:s3cr3t-password@redis-host:6379/1"


def _settings(**env: str) -> Settings:
    return Settings.from_env({"LEVIBOT_HOME": "/tmp/levibot-executors", **env})


def test_the_laptop_keeps_its_executors():
    s = _settings()
    assert s.cluster.executor == "local"
    assert default_executor(s) is None  # Dagster's multiprocess default
    assert small_job_executor(s) is dg.in_process_executor


def test_celery_runs_every_job_on_the_workers_with_one_configuration():
    s = _settings(
        LEVIBOT_EXECUTOR="celery", LEVIBOT_CELERY_BROKER=BROKER, LEVIBOT_CELERY_BACKEND=BACKEND
    )
    executor = default_executor(s)
    assert executor.name == "levibot_celery"
    assert small_job_executor(s).name == "levibot_celery"
    # The URLs are read from the environment when a run starts: not in the definition.
    assert "s3cr3t" not in repr(executor.config_schema) and "s3cr3t" not in repr(s)
    # Tasks are acknowledged at their end: a killed worker's step goes back to the queue.
    assert CELERY_CONFIG["task_acks_late"] and CELERY_CONFIG["task_reject_on_worker_lost"]
    assert CELERY_CONFIG["task_default_queue"] == "cpu"


def test_the_transformer_steps_go_to_the_gpu_queue(defs):
    tags = {
        key.to_user_string(): dict(node.tags)
        for job in [defs.resolve_job_def("training_job")]
        for node in job.graph.node_defs
        for key in [dg.AssetKey(node.name)]
    }
    assert tags["deep_tfm_model"][CELERY_QUEUE_TAG] == "gpu"
    assert tags["model_report"][CELERY_QUEUE_TAG] == "gpu"
    assert CELERY_QUEUE_TAG not in tags["lgbm_model"]
    assert CELERY_QUEUE_TAG not in tags["ensemble_weights"]


def test_celery_without_its_urls_is_refused():
    with pytest.raises(SettingsError, match="LEVIBOT_CELERY_BROKER and LEVIBOT_CELERY_BACKEND"):
        _settings(LEVIBOT_EXECUTOR="celery", LEVIBOT_CELERY_BROKER=BROKER)
    with pytest.raises(SettingsError, match="LEVIBOT_EXECUTOR='kubernetes' is not allowed"):
        _settings(LEVIBOT_EXECUTOR="kubernetes")


def test_a_bad_broker_url_is_named_by_its_scheme_never_its_value():
    with pytest.raises(SettingsError) as err:
        _settings(LEVIBOT_CELERY_BROKER="http://user:s3cr3t@redis-host:6379/0")
    assert "LEVIBOT_CELERY_BROKER" in str(err.value) and "'http'" in str(err.value)
    assert "s3cr3t" not in str(err.value)
