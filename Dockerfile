# One image for the levibot API (and, later, the Dagster code server and workers).
#   docker compose -f deploy/docker-compose.yml up -d --build api
# CPU torch by default (the CPU wheel index); the pinned version comes from pyproject.toml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MLFLOW_DISABLE_TELEMETRY=true LEVIBOT_HOME=/data/levibot
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md dagster.yaml workspace.yaml ./
COPY levibot_pipelines ./levibot_pipelines
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --extra-index-url "$TORCH_INDEX" .

RUN useradd --create-home --uid 1000 levibot
USER levibot
EXPOSE 8000
# Beyond loopback the API wants LEVIBOT_API_TOKEN (it warns without one).
CMD ["levibot", "serve", "--host", "0.0.0.0", "--port", "8000"]
