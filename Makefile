# Kubernetes-native model serving for fintech. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(CURDIR)/data
BENTOML_HOME ?= $(DATA_DIR)/bentoml
NUMBA_CACHE_DIR ?= $(DATA_DIR)/numba_cache
PORT ?= 3000
export DATA_DIR BENTOML_HOME NUMBA_CACHE_DIR
# Passed through when set: MLFLOW_TRACKING_URI, ONLINE_STORE, REDIS_URL, N_CUSTOMERS, MONTHS, SEED,
# ENGINE (local or ray), PARTITIONS, RAY_ADDRESS, TRAINING_CUSTOMERS, FRAUD_SAMPLE.

.PHONY: help trained install crd-schemas oidc-provider lock image-base image image-mlflow image-dashboard image-jobs images image-standins pods-up pods-down test-pods data features train train-candidate choose-fraud import-models build api-key serve dashboard screenshots up test faults soak test-fast bench bench-offline bench-offline-scale bench-feast-ray bench-serving loadtest canary promote rollback rollout-status retrain bench-drift drift-report drift-ui docs docs-build clean bench-stream stream consume

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

KSERVE_CLIENT := tests/clients/kserve-requirements.txt

$(VENV)/.installed: requirements.lock pyproject.toml $(KSERVE_CLIENT) | $(BIN)/activate
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip sync --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	@# KServe's SDK for its client's tests, without its pins of protobuf, psutil and python-dateutil (see the file)
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --no-deps -r $(KSERVE_CLIENT)
	@# the bytecode of python -O too, which the service runs under (PYTHONOPTIMIZE=1: docs/design/decisions/python-optimize.md)
	$(BIN)/python -O -m compileall -q -j 0 $(VENV)/lib/python3.11/site-packages > /dev/null || true
	touch $@

install: $(VENV)/.installed ## Create .venv and install the pinned dependencies (requirements.lock)

CRD_SCHEMAS := k8s/crd-schemas/node_modules/.package-lock.json
$(CRD_SCHEMAS): k8s/crd-schemas/package-lock.json
	npm ci --prefix k8s/crd-schemas --no-audit --no-fund

crd-schemas: $(CRD_SCHEMAS) ## The custom resources' schemas (npm) that the k8s/ tests validate against

OIDC_PROVIDER := tests/oidc/node_modules/.package-lock.json
$(OIDC_PROVIDER): tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund

oidc-provider: $(OIDC_PROVIDER) ## The OpenID provider (npm: oidc-provider) the authentication tests get real tokens from

lock: | $(BIN)/activate ## Re-resolve requirements.lock (everything) and requirements-runtime.lock (the bento's) from pyproject.toml
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra training --extra dashboard --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml -c requirements.lock --python-version 3.11 -o requirements-runtime.lock

data: install ## Generate synthetic customers and transactions under $(DATA_DIR)/raw
	$(BIN)/python -m training data

features: install ## Validate transactions into partitions of customers, feast apply, each partition's features (ENGINE=local or ray) with its latest rows written online
	$(BIN)/python -m training features

train: install ## Train churn, fraud and segment models into the MLflow registry
	$(BIN)/python -m training train

SERVICE ?= fraud_v2
train-candidate: install ## Train fraud on SERVICE (default fraud_v2: with the stream's features) as a new version with no alias; prints its PR-AUC beside the champion's
	$(BIN)/python -m training candidate $(SERVICE)

import-models: install ## Copy the registry's champion versions into the BentoML model store
	$(BIN)/python -m rollout.import_models

build: import-models api-key ## Build the bento (bentofile.yaml): code, settings and models, served as is (building imports the service, which needs a credential source unless AUTH_MODE=off)
	$(BIN)/bentoml build --output tag

IMAGE ?= registry.example.com/fintech/fintech-serving:0.1.0
MLFLOW_IMAGE ?= registry.example.com/fintech/mlflow:3.17.2
DASHBOARD_IMAGE ?= registry.example.com/fintech/fintech-dashboard:0.1.0
JOBS_IMAGE ?= registry.example.com/fintech/fintech-jobs:0.1.0
# Images are built by Docker where an engine answers, by podman (buildah) otherwise, from bases made
# here from Debian's packages: no registry is needed. CA_BUNDLE: a CA bundle the builds' downloads
# trust (a network that re-signs TLS), handed in as a build secret and never written to a layer;
# by default the one the host's own tools are told of (SSL_CERT_FILE), when set.
CONTAINER_ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)
IMAGE_BASE ?= localhost/fintech-base:bookworm
IMAGE_BUILDER ?= localhost/fintech-build:bookworm
CA_BUNDLE ?= $(SSL_CERT_FILE)
PODMAN_CONF := $(DATA_DIR)/podman/containers.conf
export CONTAINERS_CONF := $(PODMAN_CONF)
BUILD_FLAGS = $(if $(CA_BUNDLE),--secret id=ca$(comma)src=$(CA_BUNDLE)) --build-arg BASE=$(IMAGE_BASE) --build-arg BUILD=$(IMAGE_BUILDER)
comma := ,
# podman reads the ignore file beside a Dockerfile only when told; BuildKit finds it itself
ignore = $(if $(filter podman,$(CONTAINER_ENGINE)),--ignorefile $(1).dockerignore)
BENTO_CONTEXT := $(DATA_DIR)/bento-image

# runc, not crun (crun 1.8 refuses a hybrid cgroup layout), and ulimits the host's hard limits allow
$(PODMAN_CONF):
	@mkdir -p $(@D)
	@printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' \
	    $$(ulimit -Hn) $$(ulimit -Hn) > $@

image-base: $(PODMAN_CONF) ## The images every image starts from: Debian bookworm made by mmdebstrap (no registry), and it with uv for the build stages; made once
	k8s/images/base/build.sh $(CONTAINER_ENGINE) $(IMAGE_BASE) $(IMAGE_BUILDER) $(BUILD_FLAGS)

trained: install ## Train the models only if the registry has no champion of some family (a new checkout)
	@$(BIN)/python -m rollout.import_models --check || $(MAKE) --no-print-directory data features train

image: trained build image-base ## The serving image: the bento of `make build` (code, settings, models; trained first on a new checkout) on the base, as UID 10001
	rm -rf $(BENTO_CONTEXT) && mkdir -p $(BENTO_CONTEXT)
	$(BIN)/bentoml export fintech-serving:latest $(BENTO_CONTEXT)/bento.tar
	tar -xf $(BENTO_CONTEXT)/bento.tar -C $(BENTO_CONTEXT) && rm $(BENTO_CONTEXT)/bento.tar
	@# the export keeps the model store's modes (0700): the image's user 10001 reads them
	chmod -R a+rX,go-w $(BENTO_CONTEXT)
	$(CONTAINER_ENGINE) build $(BUILD_FLAGS) -t $(IMAGE) -f k8s/images/serving/Dockerfile $(BENTO_CONTEXT)

image-mlflow: image-base ## The MLflow server image of k8s/
	$(CONTAINER_ENGINE) build $(BUILD_FLAGS) -t $(MLFLOW_IMAGE) k8s/images/mlflow

image-dashboard: image-base ## The dashboard image of k8s/ (built from the repository root)
	$(CONTAINER_ENGINE) build $(BUILD_FLAGS) -t $(DASHBOARD_IMAGE) -f k8s/images/dashboard/Dockerfile $(call ignore,k8s/images/dashboard/Dockerfile) .

image-jobs: image-base ## The scheduled jobs' image of k8s/ (features, drift reports, retraining; built from the repository root)
	$(CONTAINER_ENGINE) build $(BUILD_FLAGS) -t $(JOBS_IMAGE) -f k8s/images/jobs/Dockerfile $(call ignore,k8s/images/jobs/Dockerfile) .

images: image image-mlflow image-dashboard image-jobs ## All four images, then their sizes
	@$(CONTAINER_ENGINE) image inspect --format '{{index .RepoTags 0}}  {{.Size}} bytes' $(IMAGE) $(MLFLOW_IMAGE) $(DASHBOARD_IMAGE) $(JOBS_IMAGE)

STANDIN_REDIS := localhost/fintech-standin-redis:bookworm
STANDIN_POSTGRES := localhost/fintech-standin-postgres:bookworm
image-standins: image-base ## Stand-ins for the public Redis and PostgreSQL images the manifests name (no registry here): Debian's packages on the base
	$(CONTAINER_ENGINE) build --build-arg BASE=$(IMAGE_BASE) -t $(STANDIN_REDIS) pods/images/redis
	$(CONTAINER_ENGINE) build --build-arg BASE=$(IMAGE_BASE) -t $(STANDIN_POSTGRES) pods/images/postgres

OVERLAY ?= dev
pods-up: install images image-standins ## The OVERLAY's (dev) pods under podman from the images built here, probed; serving on 127.0.0.1:3080
	$(BIN)/python -m pods up --overlay $(OVERLAY)

pods-down: install ## Remove the OVERLAY's pods, volumes and Secret files
	$(BIN)/python -m pods down --overlay $(OVERLAY)

test-pods: install images image-standins ## The pod tests: the images and the dev and prod overlays' pods started under podman, probed and served through
	$(BIN)/python -m pytest -m pods tests/pods

api-key: install ## The local API key (every scope) in $(DATA_DIR)/secrets, made once; prints how to use it
	$(BIN)/python -m core.api_keys local --port $(PORT)

serve: install api-key ## Serve the last built bento on $(PORT), without retraining (AUTH_MODE=off to serve without authentication)
	PYTHONOPTIMIZE=1 $(BIN)/bentoml serve fintech-serving:latest --port $(PORT)

DASHBOARD_PORT ?= 8501
STREAMLIT_FLAGS := --server.headless true --server.address 127.0.0.1 --browser.gatherUsageStats false --client.toolbarMode minimal
dashboard: install api-key ## The dashboard on $(DASHBOARD_PORT), against SERVICE_URL (default http://127.0.0.1:$(PORT)), with the local API key
	@echo "dashboard: http://127.0.0.1:$(DASHBOARD_PORT)"
	SERVICE_URL=$${SERVICE_URL:-http://127.0.0.1:$(PORT)} $(BIN)/streamlit run dashboard/app.py --server.port $(DASHBOARD_PORT) $(STREAMLIT_FLAGS)

screenshots: install ## Screenshot every page of the running dashboard (make up) in headless Chromium into docs/dashboard
	$(BIN)/python -m tests.integration.browser --url http://127.0.0.1:$(DASHBOARD_PORT) --out docs/dashboard

choose-fraud: install ## Before fraud first serves: train it on fraud_v2 (the stream's features too); the champion if it beats fraud_v1 out of time (report under reports/promotions)
	$(BIN)/python -m rollout choose fraud --service fraud_v2 || test $$? -eq 1

up: data features train choose-fraud build ## Everything from nothing: data, features, models (fraud on the better FeatureService), bento, API key; the service on :3000 and the dashboard on :8501
	@$(MAKE) --no-print-directory -j2 serve dashboard

test: install $(CRD_SCHEMAS) $(OIDC_PROVIDER) ## Run every test: unit, data contract, model behaviour, integration (needs redis-server)
	$(BIN)/python -m pytest

faults: install ## The fault and hostile-input tests at full length: 60 s of overload (make test: 10), 100 fuzzed examples per operation (make test: 50)
	OVERLOAD_SECONDS=60 FUZZ_EXAMPLES=100 $(BIN)/python -m pytest tests/integration/test_faults.py tests/integration/test_fuzz.py

soak: install ## The soak: 10 minutes at 70% of saturation (make test runs 20 s of it)
	SOAK_SECONDS=600 $(BIN)/python -m pytest tests/integration/test_soak.py -s

test-fast: install ## Run the tests not marked slow or integration
	$(BIN)/python -m pytest -m "not slow and not integration and not pods"

bench: bench-offline bench-serving bench-drift bench-stream bench-reasons ## Every benchmark; results under loadtests/results/

bench-offline: install ## Time every offline stage on the default data set (in a temporary folder)
	$(BIN)/python -m loadtests.bench_features

SCALE_DIR ?= $(DATA_DIR)/scale
SCALE_CUSTOMERS ?= 1000000
bench-offline-scale: install ## The features stage at bank scale: SCALE_CUSTOMERS (1 M) × 12 months (~100 M transactions, generated once under SCALE_DIR) → Ray, 64 partitions → Redis; peak memory and time per stage (needs redis-server, ~25 GB of disk)
	$(BIN)/python -m loadtests.bench_offline_scale --customers $(SCALE_CUSTOMERS) --data-dir $(SCALE_DIR)

bench-feast-ray: install ## Feast's Ray compute engine and Ray offline store against the local engine, DuckDB and the per-partition online writes, on the data of SCALE_DIR (after bench-offline-scale; needs redis-server)
	$(BIN)/python -m loadtests.bench_feast_ray compare --data-dir $(SCALE_DIR)

bench-serving: install ## Service vs naive design vs no-op, side by side (needs `make up` data and wrk)
	$(BIN)/python -m loadtests.bench_serving

bench-reasons: install ## How often a 1% change of the inputs keeps an adverse decision's principal reasons (needs `make up`)
	$(BIN)/python -m loadtests.bench_reasons

bench-stream: install ## Stream freshness at 1,000 events/s beside fraud-detection traffic, and the consumer's maximum (builds its own data; needs redis-server)
	$(BIN)/python -m loadtests.bench_stream

MODEL ?= churn
SHARE ?= 10
ROLLOUT := $(BIN)/python -m rollout
canary: install ## Make VERSION (default: latest) of MODEL the challenger for SHARE% of customers; SHADOW=1 for shadow
	$(ROLLOUT) canary $(MODEL) --share $(SHARE) $(if $(VERSION),--version $(VERSION)) $(if $(SHADOW),--shadow)

promote: install ## Gate MODEL's challenger on the canary's evidence; promote only if every gate passes
	$(ROLLOUT) promote $(MODEL)

rollback: install ## Give MODEL's champion alias back to the previous version and end any canary
	$(ROLLOUT) rollback $(MODEL)

rollout-status: install ## What the registry asks MODEL to serve, and what the service serves
	$(ROLLOUT) status $(MODEL)

retrain: install ## One retraining cycle of MODEL: time-boxed search, new version, guard, canary in shadow, gates (DRY_RUN=1: no alias moves)
	$(ROLLOUT) retrain $(MODEL) $(if $(DRY_RUN),--dry-run)

bench-drift: install ## Drift report over 100,000 logged rows; false alarms and power of the drift decisions (needs `make up`)
	$(BIN)/python -m loadtests.bench_drift
	$(BIN)/python -m loadtests.drift_alarms

DRIFT_ARGS ?=
drift-report: install ## Evidently drift report of MODEL: the last 24 h of its inference log against the served reference stored with its version
	$(BIN)/python -m monitoring drift-report --model $(MODEL) $(DRIFT_ARGS)

DRIFT_UI_PORT ?= 8000
drift-ui: install ## Browse the drift reports over time in Evidently's UI on $(DRIFT_UI_PORT)
	$(BIN)/evidently ui --workspace $(DATA_DIR)/evidently --host 127.0.0.1 --port $(DRIFT_UI_PORT)

RATE ?= 1000
stream: install ## Replay FILE (default: the generator's later period) on the Redis stream at RATE events/s, stamped now (needs redis-server; STREAM_REDIS_URL)
	$(BIN)/python -m streaming produce $(FILE) --rate $(RATE)

consume: install ## The stream consumer: contract check, each customer's windows, fresh features pushed to the online store; /metrics on :9108
	$(BIN)/python -O -m streaming consume

LOAD_USERS ?= 50
LOAD_TIME ?= 60s
loadtest: install ## Mixed locust traffic against a running service on $(PORT); CSV + HTML in loadtests/results/
	$(BIN)/locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:$(PORT) -u $(LOAD_USERS) -r 10 \
		-t $(LOAD_TIME) --csv loadtests/results/locust --html loadtests/results/locust.html

DOCS_PORT ?= 8800
docs: install ## Serve the documentation site (docs/, mkdocs.yml) on 127.0.0.1:$(DOCS_PORT), rebuilt as pages change
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -O -m mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

docs-build: install ## Build the documentation site into site/, strictly: any warning, broken link or missing anchor fails it
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -O -m mkdocs build --strict

clean: ## Remove generated data (keeps .venv)
	rm -rf $(DATA_DIR)
