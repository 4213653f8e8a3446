"""Prometheus metrics of the API and the JSON summary built from the same numbers.

Created on first use, not at import: BentoML sets PROMETHEUS_MULTIPROC_DIR in each worker after
importing the service module, and prometheus_client must see it to aggregate across workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from core.families import FAMILIES
from core.histograms import quantile

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10_000)
# Probabilities: fine where churn and fraud scores crowd (near 0), coarse above.
SCORE_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
AGE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86_400, 2 * 86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400)


@dataclass(frozen=True)
class Metrics:
    requests: object
    latency: object
    batch_size: object
    predictions: object
    scoring_latency: object
    scores: object
    segments: object
    shadow_dropped: object
    feature_age: object
    log_backlog: object
    log_dropped: object
    registry_failures: object
    version_refused: object
    drift_share: object
    decisions: object
    stale_rows: object
    rule_hits: object
    retrain_cycles: object
    retrain_failures_in_a_row: object
    api_keys_file_valid: object
    rate_limits_fallback: object


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    from prometheus_client import Counter, Gauge, Histogram

    version = ["model", "version", "role"]  # role: champion, challenger, or shadow (challenger scoring in the background)
    return Metrics(
        requests=Counter("fintech_requests", "API requests by route, answering model version and HTTP status.",
                         ["route", *version, "status"]),
        latency=Histogram("fintech_request_latency_seconds", "API request latency by route and answering model version.",
                          ["route", *version], buckets=LATENCY_BUCKETS),
        batch_size=Histogram("fintech_batch_size", "Requests scored together in one model call.", version, buckets=BATCH_BUCKETS),
        predictions=Counter("fintech_predictions", "Rows scored by a model version; outcome ok, unknown_customer, "
                            "invalid_feature or error (the version failed).", [*version, "outcome"]),
        scoring_latency=Histogram("fintech_scoring_latency_seconds", "Time a version took to score the batch a row was in.",
                                  version, buckets=LATENCY_BUCKETS),
        scores=Histogram("fintech_score", "Churn and fraud probabilities by model version.", version, buckets=SCORE_BUCKETS),
        segments=Counter("fintech_segment_assignments", "Customers assigned to each segment, by model version.",
                         [*version, "segment"]),
        decisions=Counter("fintech_decisions", "Decisions by model version: churn's risk levels, fraud's outcomes "
                          "(accept, review, block).", [*version, "decision"]),
        stale_rows=Counter("fintech_stale_rows", "Rows scored (or refused) with a feature view older than its maximum "
                           "age, by view and the family's policy (mark, refuse, review).", ["model", "view", "policy"]),
        rule_hits=Counter("fintech_rule_hits", "Fraud rules met, by rule and the outcome it set (core/fraud_rules.toml).",
                          [*version, "rule", "outcome"]),
        shadow_dropped=Counter("fintech_shadow_dropped", "Shadow batches skipped because the shadow scorer was behind.",
                               ["model"]),
        feature_age=Histogram("fintech_feature_age_seconds", "Age of the online features read (now less the event time "
                              "stored), per FeatureService and feature view.", ["feature_service", "view"], buckets=AGE_BUCKETS),
        log_backlog=Gauge("fintech_inference_log_backlog_rows", "Predictions held in memory, not yet in the inference log.",
                          ["model"], multiprocess_mode="livesum"),
        log_dropped=Counter("fintech_inference_log_dropped_rows", "Predictions dropped from the inference log: it could not "
                            "write for so long that its in-memory bound was reached.", ["model"]),
        registry_failures=Gauge("fintech_registry_failures", "Registry reads in a row that failed (0: the last one "
                                "answered).", ["model"], multiprocess_mode="livemax"),
        version_refused=Gauge("fintech_model_version_refused", "Versions the registry names for this model that were "
                              "refused at load (files, features or scores); the previous set keeps serving.", ["model"],
                              multiprocess_mode="livemax"),
        retrain_cycles=Gauge("fintech_retrain_cycles", "Retraining cycles of the model, by outcome (started, promoted, "
                             "refused, dry_run, failed), as the registry counts them.", ["model", "outcome"],
                             multiprocess_mode="livemax"),
        retrain_failures_in_a_row=Gauge("fintech_retrain_failures_in_a_row", "Retraining cycles of the model that failed "
                                        "in a row (0: the last one did not).", ["model"], multiprocess_mode="livemax"),
        api_keys_file_valid=Gauge("fintech_api_keys_file_valid", "1 while the API-key file validates (or there is none); "
                                  "0 while it does not, and every API key is refused.", multiprocess_mode="livemin"),
        rate_limits_fallback=Gauge("fintech_rate_limits_fallback", "1 while the rate limits should be shared across "
                                   "replicas through Redis and Redis does not answer: each pod holds its own buckets, "
                                   "so a client may get its limit from every pod. 0 otherwise.", multiprocess_mode="livemax"),
        drift_share=Gauge("fintech_drift_share", "Share of features drifted in the model's latest drift report.",
                          ["model", "version"], multiprocess_mode="livemax"),
    )


@lru_cache(maxsize=4096)
def request_series(route: str, family: str, version: str, role: str, status: int) -> tuple:
    """The request counter and latency histogram of one route, answering version and status: found
    once, not by `labels()` (a lock and a lookup) on every request."""
    m = metrics()
    return m.requests.labels(route, family, version, role, str(status)), m.latency.labels(route, family, version, role)


def observe_many(histogram, values) -> None:
    """`histogram.observe(v)` for every v, with one increment per bucket instead of one per value.

    In multiprocess mode each increment takes a lock and writes the shared file: observing a batch
    of 1,000 scores one by one cost more than scoring them. Uses the histogram's own buckets and
    values (prometheus_client's `_upper_bounds`, `_buckets`, `_sum`); a test holds it equal to
    `observe`."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return
    # the first bucket whose upper bound is >= the value, as observe() finds it
    counts = np.bincount(np.searchsorted(histogram._upper_bounds, values, side="left"), minlength=len(histogram._upper_bounds))
    histogram._sum.inc(float(values.sum()))
    for bucket, count in zip(histogram._buckets, counts):
        if count:
            bucket.inc(int(count))


def record_batch(family: str, version: str, role: str, results: list[dict], seconds: float,
                 policy: str | None = None) -> None:
    """Evidence per model version: outcomes, decisions, rule hits, scoring latency and the score
    distribution; the stale rows too, under the family's stale `policy`, when it is given (the
    answering version's batch, not the shadow's)."""
    m = metrics()
    labels = (family, version, role)
    m.batch_size.labels(*labels).observe(len(results))
    outcomes: dict[str, int] = {}
    decisions: dict[str, int] = {}
    stale: dict[str, int] = {}
    scores = []
    family_facts = FAMILIES[family]
    for result in results:
        outcome = result.get("error", "ok")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "ok":
            scores.append(result[family_facts.score_field])
            if not family_facts.categorical and (decision := result.get(family_facts.decision_field)) is not None:
                decisions[str(decision)] = decisions.get(str(decision), 0) + 1
            for hit in result.get("rules", ()):
                m.rule_hits.labels(*labels, hit["rule"], hit["outcome"]).inc()
        for view in result.get("stale_views", ()):  # scored and marked, or refused (its error row names them too)
            stale[view] = stale.get(view, 0) + 1
    if policy is not None:
        for view, count in stale.items():
            m.stale_rows.labels(family, view, policy).inc(count)
    for decision, count in decisions.items():
        m.decisions.labels(*labels, decision).inc(count)
    if family_facts.categorical:
        for segment, count in zip(*np.unique(np.asarray(scores, dtype=int), return_counts=True)):
            m.segments.labels(*labels, str(segment)).inc(int(count))
    else:
        observe_many(m.scores.labels(*labels), scores)
    for outcome, count in outcomes.items():
        m.predictions.labels(*labels, outcome).inc(count)
    observe_many(m.scoring_latency.labels(*labels), np.full(len(results), seconds))  # each row waited for its batch


def record_failure(family: str, version: str, role: str, rows: int) -> None:
    metrics().predictions.labels(family, version, role, "error").inc(rows)


def _registry():
    """Where the values live: files shared by the workers when prometheus_client was imported in
    multiprocess mode (as BentoML does it), else this process's memory."""
    from prometheus_client import REGISTRY, CollectorRegistry, values
    from prometheus_client.multiprocess import MultiProcessCollector

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and values.ValueClass is not values.MutexValue:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The /metrics page: every metric in the Prometheus text format, summed over workers."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def summary() -> dict:
    """Requests, errors, latency percentiles and batch sizes per route and model version and role."""
    routes: dict[tuple, dict] = {}
    latency_buckets: dict[tuple, list] = {}
    batches: dict[tuple, dict] = {}
    for family in _registry().collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "fintech_requests_total":
                key = (labels["route"], labels["model"], labels["version"], labels["role"])
                entry = routes.setdefault(key, {"requests": 0, "client_errors": 0, "server_errors": 0})
                count, status = int(sample.value), int(labels["status"])
                entry["requests"] += count
                if 400 <= status < 500:
                    entry["client_errors"] += count
                elif status >= 500:
                    entry["server_errors"] += count
            elif sample.name == "fintech_request_latency_seconds_bucket":
                key = (labels["route"], labels["model"], labels["version"], labels["role"])
                latency_buckets.setdefault(key, []).append((float(labels["le"]), sample.value))
            elif sample.name.startswith("fintech_batch_size_"):
                key = (labels["model"], labels["version"], labels["role"])
                entry = batches.setdefault(key, {"batches": 0, "requests": 0})
                if sample.name.endswith("_count"):
                    entry["batches"] += int(sample.value)
                elif sample.name.endswith("_sum"):
                    entry["requests"] += int(sample.value)
    out_routes = []
    for (route, model, version, role), entry in sorted(routes.items()):
        buckets = sorted(latency_buckets.get((route, model, version, role), []))
        out_routes.append({"route": route, "model": model, "version": version, "role": role, **entry,
                           **{f"latency_p{p}_ms": _ms(quantile(buckets, p / 100)) for p in (50, 95, 99)}})
    out_batches = [{"model": m, "version": v, "role": r, **e, "mean_batch_size": round(e["requests"] / e["batches"], 2) if e["batches"] else None}
                   for (m, v, r), e in sorted(batches.items())]
    return {"routes": out_routes, "batches": out_batches}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
