"""The MLflow registry as every part reads it: one client factory, the aliases a version is served
under, the tags on a registered model that steer a canary, and what the registry asks a family to
serve (`read_plan`).

    plan = read_plan("churn", tracking_uri)     # Plan(champion="3", challenger="4", share=10.0, shadow=False)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Roles: the registry aliases a version answers under, and the background role of a challenger
# that scores the champion's requests for comparison only.
CHAMPION = "champion"
CHALLENGER = "challenger"
SHADOW = "shadow"
# Tags on a registered model: what share of customers the challenger answers, whether it shadows
# the champion, and the champion before the last promotion (for rollback).
SHARE_TAG = "serving.challenger_share"
SHADOW_TAG = "serving.shadow"
PREVIOUS_TAG = "serving.previous_champion"
# The scored sample of training rows each version stores, for drift reports.
REFERENCE_ARTIFACT = "reference.parquet"  # a sample of the training rows, scored
SERVED_REFERENCE_ARTIFACT = "served_reference.parquet"  # what the service will see, scored as it scores
THRESHOLDS_ARTIFACT = "drift_thresholds.json"  # per feature: its usual movement between periods, its distance threshold


class RegistryUnavailable(RuntimeError):
    """The registry could not be read; a service keeps what it serves."""


def fail_fast(timeout_s: int, retries: int = 0) -> None:
    """Make MLflow's HTTP client give up after `timeout_s` and `retries` more tries. Its defaults
    (a 120 s timeout, seven retries with exponential back-off) hold a call for minutes against a
    registry that is down. Values already in the environment win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))


def unreachable(error: BaseException | None) -> BaseException | None:
    """The connection error or timeout behind an error of the MLflow client, when the registry did
    not answer (down, a wrong address, too slow); None when it answered (MLflow wraps what it got)."""
    import requests
    import urllib3

    while error is not None:
        if isinstance(error, requests.ConnectionError | requests.Timeout | urllib3.exceptions.HTTPError):
            return error
        error = error.__cause__ or error.__context__
    return None


def mlflow_client(tracking_uri: str):
    """A client of the tracking server and model registry at `tracking_uri`."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri, tracking_uri)


@dataclass(frozen=True)
class Plan:
    """What the registry asks a family to serve."""

    champion: str
    challenger: str | None = None
    share: float = 0.0  # percent of customers for the challenger
    shadow: bool = False


def read_plan(family: str, tracking_uri: str, default_share: float = 0.0, default_shadow: bool = False) -> Plan:
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        raise RegistryUnavailable(f"no registry database at {tracking_uri}")
    try:
        model = mlflow_client(tracking_uri).get_registered_model(family)
    except Exception as e:
        raise RegistryUnavailable(f"cannot read {family!r} from the registry at {tracking_uri}: {e}") from e
    aliases = {alias: str(version) for alias, version in model.aliases.items()}
    if CHAMPION not in aliases:
        raise RegistryUnavailable(f"registered model {family!r} has no {CHAMPION!r} alias")
    tags = model.tags or {}
    share = float(tags.get(SHARE_TAG, default_share))
    shadow = tags.get(SHADOW_TAG, str(default_shadow)).lower() in ("1", "true", "yes")
    challenger = aliases.get(CHALLENGER)
    if challenger == aliases[CHAMPION]:
        challenger = None
    return Plan(aliases[CHAMPION], challenger, share if challenger else 0.0, shadow and challenger is not None)
