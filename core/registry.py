"""The MLflow registry as every part reads it: one client factory, the aliases a version is served
under, the tags on a registered model that steer a canary, and what the registry asks a family to
serve (`read_plan`).

    plan = read_plan("churn", tracking_uri)     # Plan(champion="3", challenger="4", share=10.0, shadow=False)
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
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
# A retraining cycle (rollout/retrain.py): its record (JSON: stage, outcome, candidate, ...), its
# lock ("<cycle id> <expiry epoch s>"), and the counters the service exports.
CYCLE_TAG = "serving.cycle"
LOCK_TAG = "serving.cycle_lock"
CYCLE_COUNTERS = {"started": "serving.cycles_started", "promoted": "serving.cycles_promoted",
                  "refused": "serving.cycles_refused", "dry_run": "serving.cycles_dry_run",
                  "failed": "serving.cycles_failed", "failed_in_a_row": "serving.cycle_failures_in_a_row"}
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

    _leave_out_feasts_header_plugin()
    return MlflowClient(tracking_uri, tracking_uri)


@functools.cache
def _leave_out_feasts_header_plugin() -> None:
    """Feast registers an MLflow plugin that adds a Feast caller's token to MLflow requests, for
    Feast data sources kept in MLflow (this project has none). MLflow loads its plugins before its
    first request, and loading this one imports all of Feast: 4 s under -O and 8 s without, in
    the rollout CLI, the dashboard and drift reports, which never read a feature. It is left out of
    what MLflow finds; any other plugin still loads."""
    from mlflow.utils import plugins

    find = plugins._get_entry_points

    def without_feast(group: str):
        found = find(group)
        if group != "mlflow.request_header_provider":
            return found
        return [entry for entry in found if not entry.value.startswith("feast.")]

    plugins._get_entry_points = without_feast


def champion_feature_service(client, family: str, default: str) -> str:
    """The FeatureService the family's champion was trained on (its run's `feature_service` tag),
    which a new version of the family is trained on too; `default` when the family has no champion
    yet (a new registry)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(family, CHAMPION)
    except MlflowException:  # no such model, or no champion
        return default
    return client.get_run(version.run_id).data.tags.get("feature_service", default)


@dataclass(frozen=True)
class Plan:
    """What the registry asks a family to serve."""

    champion: str
    challenger: str | None = None
    share: float = 0.0  # percent of customers for the challenger
    shadow: bool = False
    # the last retraining cycle and the cycle counters: shown and exported, never a reason to reload
    cycle: dict | None = field(default=None, compare=False)
    cycle_counts: dict = field(default_factory=dict, compare=False)


def cycle_state(tags: dict) -> tuple[dict | None, dict[str, int]]:
    """The last retraining cycle's stage and outcome, and the counters, from a registered model's tags."""
    try:
        record = json.loads(tags[CYCLE_TAG]) if tags.get(CYCLE_TAG) else None
    except ValueError:
        record = {"stage": "unreadable record"}
    brief = None if record is None else {key: record.get(key) for key in (
        "id", "trigger", "stage", "outcome", "reason", "candidate", "started", "dry_run")}
    counts = {name: int(tags.get(tag, "0") or 0) for name, tag in CYCLE_COUNTERS.items()}
    return brief, counts


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
    cycle, counts = cycle_state(tags)
    return Plan(aliases[CHAMPION], challenger, share if challenger else 0.0, shadow and challenger is not None, cycle, counts)
