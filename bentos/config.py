"""Serving settings, read from the environment (prefix SERVING_), with documented defaults.

The feature store settings (DATA_DIR, ONLINE_STORE, REDIS_URL) are the pipeline's own
(training/settings.py), so the service reads the store the pipeline materialized.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BatchSettings(BaseSettings):
    """Adaptive batching of one model family's core API."""

    max_batch_size: int = Field(256, ge=1, description="Most requests scored in one batch.")
    max_latency_ms: int = Field(1000, ge=1, description=(
        "Latency budget of one request inside the batcher; past it BentoML sheds the request (503). "
        "At 200 ms it shed 1% of requests at saturation and 0.2% at 300 req/s on 2 cores; at 1000 ms none, "
        "at the same throughput."))


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_", env_nested_delimiter="__", extra="ignore")

    alias: str = Field("champion", description="Registry alias of the versions imported and served.")
    churn: BatchSettings = BatchSettings()
    fraud: BatchSettings = BatchSettings()
    segment: BatchSettings = BatchSettings()
    max_batch_ids: int = Field(10_000, description="Most customer ids accepted by churn-batch.")
    top_reasons: int = Field(5, ge=1, le=50, description="Reason codes returned per churn or fraud score.")
    workers: int = Field(1, ge=1, description="Worker processes of each model service.")


def get_serving_settings() -> ServingSettings:
    return ServingSettings()


# Service options shared by the three model services. `runner_connection`: BentoML 1.4.30+
# renews the caller's connection pool every 100 requests and closes the old one under requests
# still in flight, which fails them under concurrent load (BentoML issues 5540, 5544); we renew
# it never (1e9 requests, a year).
MODEL_SERVICE_OPTIONS = {
    "traffic": {"timeout": 30},
    "logging": {"access": {"enabled": False}},
    "runner_connection": {"max_requests": 1_000_000_000, "max_age": 31_536_000.0},
}
