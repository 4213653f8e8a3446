# Kubernetes-native model serving for fintech. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(CURDIR)/data
BENTOML_HOME ?= $(DATA_DIR)/bentoml
PORT ?= 3000
export DATA_DIR BENTOML_HOME
# Passed through when set: MLFLOW_TRACKING_URI, ONLINE_STORE, REDIS_URL, N_CUSTOMERS, MONTHS, SEED.

.PHONY: help install lock data features train import-models build serve up test test-fast bench loadtest clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip sync --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed ## Create .venv and install the pinned dependencies (requirements.lock)

lock: | $(BIN)/activate ## Re-resolve requirements.lock from pyproject.toml
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

data: install ## Generate synthetic customers and transactions under $(DATA_DIR)/raw
	$(BIN)/python -m training data

features: install ## Validate transactions, compute features, feast apply + materialize
	$(BIN)/python -m training features

train: install ## Train churn, fraud and segment models into the MLflow registry
	$(BIN)/python -m training train

import-models: install ## Copy the registry's champion versions into the BentoML model store
	$(BIN)/python -m bentos.import_models

build: import-models ## Build the bento (bentofile.yaml): code, settings and models, served as is
	$(BIN)/bentoml build --output tag

serve: install ## Serve the last built bento on $(PORT), without retraining
	$(BIN)/bentoml serve fintech-serving:latest --port $(PORT)

up: data features train build serve ## Everything from nothing: data, features, models, bento, HTTP on :3000

test: install ## Run every test: unit, data contract, model behaviour, integration (needs redis-server)
	$(BIN)/python -m pytest

test-fast: install ## Run the tests not marked slow or integration
	$(BIN)/python -m pytest -m "not slow and not integration"

bench: install ## Time the feature pipeline on the default data set; writes loadtests/results/
	$(BIN)/python -m loadtests.bench_features

clean: ## Remove generated data (keeps .venv)
	rm -rf $(DATA_DIR)
