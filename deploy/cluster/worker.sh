#!/usr/bin/env bash
# One Celery worker of the cluster profile, for one queue:
#   deploy/cluster/worker.sh cpu     # every step but the Transformer training
#   deploy/cluster/worker.sh gpu     # the Transformer training (deep_tfm_model, model_report)
#   deploy/cluster/worker.sh cpu,gpu # both (a host that does everything, e.g. the benchmark)
# Extra arguments go to `celery worker` (e.g. --concurrency 2). The worker needs the same
# environment as every host of the cluster (deploy/cluster/README.md): LEVIBOT_PG_*,
# LEVIBOT_CELERY_BROKER / LEVIBOT_CELERY_BACKEND, LEVIBOT_HOME (or LEVIBOT_DATA_URL), DAGSTER_HOME.
set -euo pipefail
queue="${1:-}"
case "$queue" in
  cpu | gpu | cpu,gpu | gpu,cpu) shift ;;
  *) echo "usage: $0 cpu|gpu|cpu,gpu [celery worker options]" >&2; exit 2 ;;
esac
python="${PYTHON:-python}"
# One step at a time (a training step uses every core, or the GPU; --concurrency N to change it);
# a unique name per process, so that two workers of one queue on one host are told apart.
exec "$python" -m celery -A levibot_pipelines.celery_app worker -Q "$queue" \
  -n "${queue/,/+}-$$@%h" --concurrency 1 --loglevel INFO "$@"
