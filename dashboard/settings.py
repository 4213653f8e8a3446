"""The dashboard's settings, read from the environment (prefix DASHBOARD_; SERVICE_URL too)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DASHBOARD_", extra="ignore")

    service_url: str = Field("http://127.0.0.1:3000", validation_alias=AliasChoices("SERVICE_URL", "DASHBOARD_SERVICE_URL"),
                             description="The scoring service whose HTTP API gives every score and explanation.")
    family_urls: dict[str, str] = Field(default_factory=dict, description=(
        "Where each family is its own service (the prod overlay), its URL, as JSON: "
        '{"churn": "http://fintech-serving-churn:80", ...}; a family not named is asked at service_url.'))
    timeout_s: float = Field(10.0, gt=0, description="How long one call to the service or the registry may take.")
    batch_ids: int = Field(1_000, ge=1, le=10_000, description="Customer ids per churn-batch call when scoring the base.")
    top_n: int = Field(20, ge=1, le=200, description="At-risk customers listed on the churn page.")
    score_cache_s: int = Field(900, ge=0, description="How long a batch scoring of the base is reused before it is redone.")


def get_dashboard_settings() -> DashboardSettings:
    return DashboardSettings()
