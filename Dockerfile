# One image for the code location: the levibot API (the default command), the Dagster code
# server, webserver and daemon, the Celery workers (deploy/cluster/worker.sh cpu|gpu) and the
# cluster's MLflow server (mlflow, psycopg2 and boto3 come with the project's dependencies).
#   docker build -t levibot-pipelines:cpu .                    # CPU torch (the default)
#   docker build -t levibot-pipelines:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   # CUDA torch
#   docker compose -f deploy/docker-compose.yml up -d --build api        # the API alone
#   docker compose -f deploy/cluster/docker-compose.yml up -d --build    # the whole cluster
# The pinned torch version comes from pyproject.toml; TORCH_INDEX only picks its build (`+cpu`,
# `+cu128`: any index of download.pytorch.org/whl/ that has that version). The CUDA wheels carry
# their CUDA runtime (the nvidia-* wheels), so the same slim Python base serves both: the host
# needs only the NVIDIA driver and the NVIDIA Container Toolkit. BASE picks another base image
# with Python 3.11 or 3.12 and pip (a mirror, a pinned digest).
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# NVIDIA_DRIVER_CAPABILITIES: what the NVIDIA runtime mounts in a container given a GPU
# (CUDA compute and nvidia-smi); without a GPU it means nothing.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MLFLOW_DISABLE_TELEMETRY=true MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    DAGSTER_DISABLE_TELEMETRY=true NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LEVIBOT_HOME=/data/levibot DAGSTER_HOME=/data/levibot/dagster
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md dagster.yaml workspace.yaml ./
COPY levibot_pipelines ./levibot_pipelines
RUN pip install --extra-index-url "$TORCH_INDEX" .
# The cluster profile's files: the Dagster instance, the compose workspace, the worker script.
COPY deploy/__init__.py ./deploy/__init__.py
COPY deploy/cluster ./deploy/cluster

# The home (and the Dagster instance in it) belongs to the service user: a named volume mounted
# there starts with this ownership.
RUN useradd --create-home --uid 1000 levibot \
    && mkdir -p /data/levibot/dagster && chown -R levibot:levibot /data/levibot
USER levibot
EXPOSE 8000
# Beyond loopback the API wants LEVIBOT_API_TOKEN (it warns without one).
CMD ["levibot", "serve", "--host", "0.0.0.0", "--port", "8000"]
