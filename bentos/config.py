"""Serving settings, read from the environment (prefix SERVING_), with documented defaults.

The feature store settings (DATA_DIR, ONLINE_STORE, REDIS_URL) are the pipeline's own
(core/settings.py), so the service reads the store the pipeline materialized.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.families import FAMILIES
from core.rules import RULES
from core.stream_features import STREAM_VIEW

API_PREFIX = "/api/v1/inference"
PROTOCOL_PREFIX = "/v2"  # the Open Inference Protocol's routes (bentos/oip.py)


# How old a feature view may be before its rows are stale: the features job writes the batch views
# daily (k8s/base: the fintech-features CronJob), so 36 hours is one missed run with some slack; the
# stream consumer says every second when it has drained the stream (streaming/consumer.py)
MAX_AGE_S = {"customer_activity": 36 * 3600.0, "customer_spend_mix": 36 * 3600.0, "customer_risk_profile": 36 * 3600.0,
             STREAM_VIEW: 300.0}


class FamilySettings(BaseModel):
    """Batching of one model family's single-customer requests, and its canary defaults: read
    through ServingSettings only (SERVING_FRAUD__SHADOW=true), never from a bare SHADOW."""

    max_batch_size: int = Field(256, ge=1, description="Most requests scored in one batch.")
    max_wait_ms: float = Field(1.0, ge=0, le=1000, description=(
        "How long the first request of a batch may wait for others, when requests arrive closer together than "
        "this; a request to an idle service never waits. 0: never; a batch then holds what arrived while the "
        "previous one was scored (bentos/batching.py)."))
    challenger_share: float = Field(0.0, ge=0, le=100, description=(
        "Percent of customers the `challenger` version answers, when the registry names one. The registered "
        "model's tag serving.challenger_share, set by `make canary` and reset by promote/rollback, wins over this."))
    shadow: bool = Field(False, description=(
        "The challenger also scores the champion's requests in the background, for comparison only. "
        "The tag serving.shadow wins over this."))
    max_age_s: dict[str, float] = Field(MAX_AGE_S, description=(
        "The oldest each feature view's online row may be, in seconds, by view (a JSON object: "
        "SERVING_FRAUD__MAX_AGE_S='{\"customer_stream\": 60}'); a view not named has no limit. Each answer says "
        "every view's age (`feature_age_s`) and names the older ones (`stale_views`)."))
    stale: Literal["mark", "refuse", "review"] = Field("mark", description=(
        "What a row with a stale view gets: `mark` scores it and names the views; `refuse` answers 503 "
        "`stale_features` naming them; `review` (fraud) scores it with an outcome of at least review."))
    rules: Path | None = Field(None, description=(
        "Rules each request meets before the model's outcome stands (core/rules.py); fraud's default is "
        "core/fraud_rules.toml (SERVING_FRAUD__RULES names another file). Read at start-up: a file that cannot be "
        "used stops the start, naming the rule."))


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_", env_nested_delimiter="__", extra="ignore")

    churn: FamilySettings = FamilySettings()
    fraud: FamilySettings = FamilySettings(rules=RULES)
    segment: FamilySettings = FamilySettings()
    registry_poll_s: float = Field(15.0, ge=0, description=(
        "How often each family asks the MLflow registry for alias and canary changes; 0 = only at start "
        "and on POST /admin/reload. Without a reachable registry the service keeps what it serves."))
    registry_max_backoff_s: float = Field(120.0, ge=0, description=(
        "While the registry fails, each poll waits twice as long as the last, up to this."))
    registry_timeout_s: int = Field(5, ge=1, description=(
        "How long one registry request may take, with no retries (MLflow's defaults retry for minutes, "
        "holding a reload that long). MLFLOW_HTTP_REQUEST_TIMEOUT and _MAX_RETRIES, when set, win."))
    model_cache: Path | None = Field(None, description="Where versions downloaded from the registry are kept "
                                     "[default DATA_DIR/model_cache].")
    max_batch_ids: int = Field(10_000, description="Most customer ids accepted by churn-batch.")
    max_body_bytes: int = Field(1_048_576, ge=1, description=(
        "Largest request body accepted; a larger one is refused with 413 before it is read. The largest valid "
        "body, churn-batch's 10,000 ids of 64 characters, is about 680 KB."))
    top_reasons: int = Field(5, ge=1, le=50, description="Reason codes returned per churn or fraud score.")
    families: str = Field(",".join(FAMILIES), description=(
        "The model families this process serves, comma-separated (churn, fraud, segment). The routes of the "
        "others answer 404: one image can run each family as its own Deployment."))
    workers: int = Field(1, ge=1, description="Worker processes of the service; each serves every family it holds.")
    grpc_port: int = Field(8001, ge=0, le=65535, description=(
        "The port of the Open Inference Protocol over gRPC, served by every worker (SO_REUSEPORT); 0 = off. "
        "Two servers on one host need two ports: the kernel would share one between them."))
    grpc_host: str = Field("0.0.0.0", description="The address the gRPC port is bound to (127.0.0.1: this host only).")
    tracing: bool = Field(False, description=(
        "Trace the scoring routes with OpenTelemetry (BentoML's `tracing` settings say where spans go). Off, "
        "the tracing middleware lets them through untouched: tracing every request cost more than half of "
        "the framework's throughput here (docs/design/decisions/framework-middlewares-off.md)."))
    inference_log: bool = Field(True, description="Log every prediction with its features (bentos/inference_log.py).")
    inference_log_dir: Path | None = Field(None, description="Where the inference log is written [default DATA_DIR/inference_log].")
    inference_log_flush_s: float = Field(2.0, gt=0, description=(
        "The inference log is written every this many seconds (or 5,000 rows), and at shutdown."))
    inference_log_journal: Literal["write", "fsync", "off"] = Field("write", description=(
        "Each scored batch goes to the inference log's journal before its answers leave. `write`: to the "
        "operating system, so an answered decision survives the process being killed (an OOM kill, a "
        "SIGKILL); `fsync`: to the disk, so it survives the machine failing too. Both number and chain the "
        "rows (`python -m monitoring verify`). `off`: the log as it was before: held in memory until the next "
        "file, so a kill loses up to inference_log_flush_s of answered decisions, and not chained."))
    inference_log_max_rows: int = Field(100_000, ge=1, description=(
        "Predictions a family holds in memory while its inference log cannot be written (about 0.5 KB each "
        "for churn); past this the oldest are dropped and counted in fintech_inference_log_dropped_rows_total."))
    request_timeout_s: float = Field(10.0, gt=0, description=(
        "A request unanswered after this long gets a 504. BentoML keeps every request's context (its trace "
        "span, its future) alive until this timer fires, answered or not, so under load a long timeout is "
        "a large heap for the garbage collector to walk: at 30 s, collection pauses reached 200 ms."))
    max_header_bytes: int = Field(8192, ge=1024, description=(
        "Largest total size of a request's headers; a larger request is refused with 431 before anything reads them. "
        "A bearer token from a usual OpenID provider is 1-2 KB."))
    max_in_progress: int = Field(128, ge=1, description=(
        "Scoring requests a worker process holds at once; the next are refused at once with 503 `overloaded` and "
        "Retry-After, so an overloaded service sheds instead of queueing without bound (at about 1,000 req/s a worker, "
        "128 in progress is about 130 ms of waiting at most)."))
    store_timeout_s: float = Field(0.5, gt=0, description=(
        "How long a feature read waits for Redis to connect or reply before its batch answers 503. The read "
        "runs on the event loop, so a store that hangs holds the whole process this long per try."))
    gc_young_threshold: int = Field(20_000, ge=1, description=(
        "Python's collector looks at the young generation after this many more objects have been made than "
        "freed (Python's default: 700; 700 restores it). At 700, under load, the collector took 5-8% of a "
        "worker's time, its oldest generation pausing it 34-48 ms every second or so; at 20,000 one worker "
        "answered 12% more churn-scores (docs/design/decisions/collector-thresholds.md)."))
    store_retry_s: float = Field(1.0, ge=0, description=(
        "After the online store failed, batches answer 503 at once for this long before the next read tries "
        "it again (clients get it as Retry-After)."))


    @field_validator("families")
    @classmethod
    def _known_families(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - set(FAMILIES))
        if unknown or not names:
            raise ValueError(f"unknown model families {unknown or value!r}; choose from {', '.join(FAMILIES)}")
        return ",".join(name for name in FAMILIES if name in names)

    @model_validator(mode="after")
    def _review_only_where_there_is_one(self) -> ServingSettings:
        for name in FAMILIES:
            own = getattr(self, name, None)
            if own is not None and own.stale == "review" and "review" not in FAMILIES[name].adverse:
                raise ValueError(f"{name} has no review outcome: its stale policy may be mark or refuse")
        return self

    def served(self) -> tuple[str, ...]:
        """The families this process serves, in the canonical order."""
        return tuple(self.families.split(","))

    def family(self, name: str) -> FamilySettings:
        return getattr(self, name)


def get_serving_settings() -> ServingSettings:
    return ServingSettings()


def service_options(settings: ServingSettings) -> dict:
    """The BentoML options of the service (and of the benchmark's no-op, so both run alike).

    Two of BentoML's ASGI middlewares cost more than the rest of a request: its HTTP metrics, which
    duplicate ours (fintech_requests_total and fintech_request_latency_seconds carry the route,
    the answering version and the status), and OpenTelemetry's, which opens spans per request
    and per ASGI message. A no-op route served by 2 workers answered 2,916 req/s with both, 3,554
    without the metrics and 7,644 without either (docs/design/decisions/framework-middlewares-off.md). /metrics is then served by the
    app itself (bentos/api.py). Access logs are off for the same reason."""
    options = {
        "workers": settings.workers,
        "traffic": {"timeout": settings.request_timeout_s},
        "logging": {"access": {"enabled": False}},
        "metrics": {"enabled": False},
    }
    if not settings.tracing:
        options["tracing"] = {"excluded_urls": [API_PREFIX, f"{PROTOCOL_PREFIX}/"]}
    return options


def freeze_heap(young: int | None = None) -> None:
    """Exclude everything a service built at start (libraries, models, the store client) from
    Python's garbage collector, which would otherwise walk that whole heap again and again while
    a batch allocates its feature values: reading 1,000 customers took 0.32 → 0.12 ms per customer
    from Redis, 0.44 → 0.30 from SQLite (loadtests/results/serving*.md, "collected" → "frozen").
    Then collect the young generation after `young` objects (SERVING_GC_YOUNG_THRESHOLD), not 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young or get_serving_settings().gc_young_threshold)
