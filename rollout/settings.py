"""Settings of the rollout tools, read from the environment (prefix PROMOTE_), with documented defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GateSettings(BaseSettings):
    """The gates `make promote` applies to a challenger, over the canary window (env prefix PROMOTE_)."""

    model_config = SettingsConfigDict(env_prefix="PROMOTE_", extra="ignore")

    service_url: str = Field("http://127.0.0.1:3000", description="The running service whose /metrics hold the evidence.")
    min_predictions: int = Field(200, ge=1, description="Challenger predictions needed before any verdict.")
    max_error_rate_increase: float = Field(0.01, ge=0, description=(
        "Challenger error rate may exceed the champion's by at most this (absolute: 0.01 = 1 point)."))
    max_unknown_rate_increase: float = Field(0.01, ge=0, description=(
        "Share of rows whose customer the challenger's features do not know, over the champion's, at most (absolute)."))
    max_p99_ratio: float = Field(1.5, gt=0, description="Challenger p99 scoring latency over the champion's, at most.")
    max_score_psi: float = Field(0.2, ge=0, description=(
        "Population stability index between the two versions' score distributions, at most (0.1: small shift, "
        "0.2: the usual line for a significant one)."))
    max_quality_drop: float = Field(0.02, ge=0, description=(
        "On the latest labelled data, the challenger's PR-AUC may fall short of the champion's by at most this."))
    max_flip_rate: float | None = Field(None, ge=0, le=1, description=(
        "Share of the challenger's rows on which the champion, given the same features, decides otherwise "
        "(rollout/flips.py), at most; unset: the flips are reported and not a gate."))
    reports_dir: Path | None = Field(None, description="Where reports are written [default DATA_DIR/reports/promotions].")


def get_gate_settings() -> GateSettings:
    return GateSettings()
