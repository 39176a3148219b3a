"""Where a job's steps run, chosen by ``LEVIBOT_EXECUTOR`` (``settings.ClusterSettings``).

``local`` (the laptop, default): the small live jobs (ingest, features, publish) run their steps
in the run's own process, the others one subprocess per step (Dagster's multiprocess default).
``celery`` (deploy/cluster/): every job's steps are Celery tasks on the workers
(``levibot_pipelines.celery_app``, started by deploy/cluster/worker.sh), in queue ``gpu`` when
the step is tagged ``GPU_QUEUE`` (the Transformer training and the walk-forward report, which
trains Transformers) and in ``cpu`` otherwise. The same assets, jobs and use cases either way:
only the executor differs.

``CELERY_CONFIG`` is the one Celery configuration of both sides, the executor that sends the
tasks and the worker app that runs them, so the two cannot drift apart.
"""

import dagster as dg

from levibot_pipelines.settings import Settings

CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
CPU_QUEUE, GPU_QUEUE = "cpu", "gpu"
GPU_STEP_TAGS = {CELERY_QUEUE_TAG: GPU_QUEUE}

CELERY_CONFIG: dict = {
    "task_default_queue": CPU_QUEUE,
    # A task is acknowledged when it ends, not when it starts: if the worker process running a
    # step dies (killed, OOM), the message goes back to the queue and another worker runs the
    # step again, instead of the run waiting for a result that never comes.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,  # a worker holds only the step it runs
    # A whole worker host lost holds its unacknowledged step until Redis gives it back after
    # this many seconds: longer than the longest step, or a slow step would run twice.
    "broker_transport_options": {"visibility_timeout": 6 * 3600},
    # Broker or backend down: give up after a bounded time with the error, never hang.
    "broker_connection_retry_on_startup": True,
    "broker_connection_timeout": 10,
    "redis_socket_connect_timeout": 10,
    "redis_socket_timeout": 30,
    "result_backend_transport_options": {"retry_policy": {"timeout": 30.0}},
    "result_expires": 7 * 24 * 3600,
}


def celery_executor_def() -> dg.ExecutorDefinition:
    """Dagster's Celery executor with ``CELERY_CONFIG``; broker and backend are read from
    ``LEVIBOT_CELERY_BROKER`` / ``LEVIBOT_CELERY_BACKEND`` when a run starts (``EnvVar``-style
    config: the URLs, which may hold a password, are in no run config or event)."""
    from dagster_celery import celery_executor  # only on the cluster: celery is not needed else

    return celery_executor.configured(
        {
            "broker": {"env": "LEVIBOT_CELERY_BROKER"},
            "backend": {"env": "LEVIBOT_CELERY_BACKEND"},
            "config_source": CELERY_CONFIG,
        },
        name="levibot_celery",
    )


def default_executor(s: Settings) -> dg.ExecutorDefinition | None:
    """The code location's default executor: None (Dagster's multiprocess) on the laptop."""
    return celery_executor_def() if s.cluster.executor == "celery" else None


def small_job_executor(s: Settings) -> dg.ExecutorDefinition:
    """The executor of the small live jobs: in the run's own process on the laptop (a step
    subprocess costs about 20 s of start-up on 2 cores, benchmarks/dagster_jobs.py), the
    Celery workers on the cluster (warm processes: no start-up per step)."""
    return default_executor(s) or dg.in_process_executor
