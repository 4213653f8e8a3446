"""One model family served in this process: the versions it serves (champion, maybe a
challenger), routing each request to one of them, batching, shadow scoring, the inference log,
and status, readiness and reload.

    churn = FamilyServer("churn", serving_settings, settings)   # builds nothing yet
    churn.start(packed, reader)          # the version packed into the bento; starts the threads
    result = await churn.score({"customer_id": "C0000001", "pin": None, "request_id": "..."})
    churn.stop()                         # writes the inference log's last rows

`Server` holds the families one process serves and the feature reader they share.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bentos.batching import Batcher
from bentos.canary import UnknownVersion
from bentos.config import ServingSettings
from bentos.inference_log import InferenceLog
from bentos.metrics import metrics, record_batch, record_failure
from bentos.shadow import ShadowRunner
from bentos.versions import LiveSet, Versions
from core.families import FAMILIES
from core.registry import CHALLENGER, CHAMPION, fail_fast
from core.reports import latest_summary
from core.rules import Rules, load_rules
from core.settings import Settings
from scoring.base import UNKNOWN_CUSTOMER, UNKNOWN_VERSION, Freshness, ModelInfo, OnlineFeatures, build_scorer
from scoring.loading import LoadedVersion, VersionRefused

if TYPE_CHECKING:
    from bentos.online import FeastReader

log = logging.getLogger(__name__)


def score_as(live: LiveSet, role: str, requests: list[dict], inference_log: InferenceLog | None = None, method: str = "score",
             **kwargs) -> list[dict]:
    """Score with one role's version and log the predictions. A failing challenger hands its
    requests to the champion, and so do the rows of customers it does not know (its FeatureService
    may read a view nobody materialized): each is counted against it, as an error or an unknown
    customer, and a canary never costs a caller an answer."""
    scorer = live.scorers[role]
    started = time.perf_counter()
    try:
        results = getattr(scorer, method)(requests, keep_features=inference_log is not None, **kwargs)
    except Exception:
        record_failure(live.family, scorer.info.version, role, len(requests))
        if role != CHALLENGER:
            raise
        log.exception("%s: challenger version %s failed on %d rows; the champion answers", live.family,
                      scorer.info.version, len(requests))
        return score_as(live, CHAMPION, requests, inference_log, method, **kwargs)
    record_batch(live.family, scorer.info.version, role, results, time.perf_counter() - started,
                 freshness.policy if (freshness := getattr(scorer, "freshness", None)) else "mark")
    if inference_log is not None:
        inference_log.append(scorer.info.version, role, scorer.features, requests, results)
    if role == CHALLENGER and (unknown := [i for i, r in enumerate(results) if r.get("error") == UNKNOWN_CUSTOMER]):
        for i, result in zip(unknown, score_as(live, CHAMPION, [requests[i] for i in unknown], inference_log, method, **kwargs)):
            results[i] = result
    return results


def unknown_version(customer_id: str, error: UnknownVersion) -> dict:
    return {"customer_id": customer_id, "error": UNKNOWN_VERSION, "detail": str(error)}


def route(live: LiveSet, requests: list[dict]) -> tuple[dict[str, list[int]], dict[int, dict]]:
    """Row indexes per role, and the error results of rows whose pin names no live version."""
    by_role: dict[str, list[int]] = defaultdict(list)
    errors: dict[int, dict] = {}
    for i, request in enumerate(requests):
        try:
            by_role[live.role_for(request)].append(i)
        except UnknownVersion as e:
            errors[i] = unknown_version(request["customer_id"], e)
    return by_role, errors


def score_routed(live: LiveSet, requests: list[dict], shadow: ShadowRunner | None = None, inference_log: InferenceLog | None = None,
                 method: str = "score", **kwargs) -> list[dict]:
    """Each request scored by the version its customer (or pin) is routed to, in one batch per version."""
    by_role, errors = route(live, requests)
    results: list[dict | None] = [errors.get(i) for i in range(len(requests))]
    for role, indexes in by_role.items():
        for i, result in zip(indexes, score_as(live, role, [requests[i] for i in indexes], inference_log, method, **kwargs)):
            results[i] = result
    if live.shadow and shadow is not None and CHAMPION in by_role:
        champion_rows = by_role[CHAMPION]
        shadow.submit(live.challenger, [requests[i] for i in champion_rows], [results[i] for i in champion_rows], **kwargs)
    return results


def watch_drift(family: str, reports_dir: Path, every_s: float) -> threading.Thread:
    """Export the drift share of the family's newest drift report (make drift-report writes them)."""
    def loop():
        while True:
            try:
                summary = latest_summary(reports_dir, family)
            except (OSError, ValueError):  # a report being written, or a broken one: next time
                log.exception("%s: cannot read the newest drift report under %s", family, reports_dir)
                summary = None
            if summary is not None:
                metrics().drift_share.labels(family, str(summary["version"])).set(summary["drift_share"])
            time.sleep(every_s)

    thread = threading.Thread(target=loop, name=f"{family}-drift", daemon=True)
    thread.start()
    return thread


class ProbeReader:
    """The rows a version scores before it may serve: every feature missing, all zeros, all ones."""

    ROWS = (float("nan"), 0.0, 1.0)

    def __init__(self, features: list[str]):
        self.features = features

    def read(self, feature_service: str, rows: list[dict]) -> OnlineFeatures:
        return OnlineFeatures({name: np.array(self.ROWS[:len(rows)]) for name in self.features}, np.ones(len(rows), dtype=bool))


def checked_scorer(loaded: LoadedVersion, info: ModelInfo, reader: FeastReader, top_reasons: int, rules: Rules | None = None,
                   freshness: Freshness | None = None):
    """The scorer of a version that reads only features its FeatureService serves and scores the
    probe rows with finite numbers, with the family's `rules` when it has some and its `freshness`;
    VersionRefused says which check it failed."""
    features, service = loaded.metadata["features"], info.feature_service
    try:
        served = set(reader.features_of(service))
    except Exception as e:
        raise VersionRefused(loaded.family, loaded.version, f"names feature service {service!r}, which Feast does not know: {e}") from e
    if missing := [name for name in features if name not in served]:
        raise VersionRefused(loaded.family, loaded.version, f"reads features its feature service {service!r} does not serve: {missing}")
    score = FAMILIES[loaded.family].score_field
    try:
        scorer = build_scorer(loaded, info, ProbeReader(features), top_reasons)
        scores = [r[score] for r in scorer.score([{"customer_id": "probe"}] * len(ProbeReader.ROWS))]
    except Exception as e:
        raise VersionRefused(loaded.family, loaded.version, f"fails to score: {type(e).__name__}: {e}") from e
    if not np.isfinite(scores).all():
        raise VersionRefused(loaded.family, loaded.version, f"scores {scores} on rows of missing, zero and one values")
    scorer.reader = reader  # checked: from now on it reads the feature store
    if rules is not None:
        scorer.use_rules(rules)
    scorer.freshness = freshness
    return scorer


class FamilyServer:
    """Everything one family needs to answer requests. Building it does nothing; `start` loads."""

    def __init__(self, family: str, serving: ServingSettings, settings: Settings):
        self.family, self.serving, self.settings = family, serving, settings
        self.versions: Versions | None = None
        self.inference_log: InferenceLog | None = None

    def start(self, packed: LoadedVersion, reader: FeastReader) -> None:
        """Serve the version packed into the bento, then follow the registry; start the inference
        log's writer, the registry poll and the drift watch."""
        serving, settings, own = self.serving, self.settings, self.serving.family(self.family)
        self.reader = reader
        rules = load_rules(own.rules) if own.rules else None
        if rules is not None:
            log.info("%s: rules version %s from %s (%d rules)", self.family, rules.version, own.rules, len(rules.rules))
        freshness = Freshness(own.max_age_s, own.stale)
        self.versions = Versions(self.family, packed, lambda loaded, info: checked_scorer(loaded, info, reader, serving.top_reasons, rules,
                                                                                         freshness),
                                 settings.tracking_uri, serving.model_cache or settings.data_dir / "model_cache",
                                 own.challenger_share, own.shadow, on_change=self._registry_state)
        self.versions.reload()
        if serving.registry_poll_s:
            self.versions.follow(serving.registry_poll_s, serving.registry_max_backoff_s)
        if serving.inference_log:
            self.inference_log = InferenceLog(serving.inference_log_dir or settings.data_dir / "inference_log", self.family,
                                              flush_s=serving.inference_log_flush_s, on_backlog=self._backlog,
                                              max_rows=serving.inference_log_max_rows, journal=serving.inference_log_journal,
                                              on_dropped=metrics().log_dropped.labels(self.family).inc).start()
            self._backlog(0)  # the series exists from the first scrape, not from the first flush
        self.shadow = ShadowRunner(self.family, settings.data_dir / "logs" / "shadow", self.inference_log)
        self.batcher = Batcher(self.score_batch, own.max_batch_size, own.max_wait_ms)
        watch_drift(self.family, settings.data_dir / "reports" / "drift", serving.registry_poll_s or 60.0)

    def _registry_state(self, versions: Versions) -> None:
        metrics().registry_failures.labels(self.family).set(versions.failures)
        metrics().version_refused.labels(self.family).set(len(versions.asked_refused()))
        if versions.asked is not None:  # the registry's retraining counters (rollout/retrain.py)
            for outcome, cycles in versions.asked.cycle_counts.items():
                if outcome == "failed_in_a_row":
                    metrics().retrain_failures_in_a_row.labels(self.family).set(cycles)
                else:
                    metrics().retrain_cycles.labels(self.family, outcome).set(cycles)

    def _backlog(self, rows: int) -> None:
        metrics().log_backlog.labels(self.family).set(rows)

    def stop(self) -> None:
        """Write the inference log's last rows before the process exits."""
        if self.inference_log is not None:
            self.inference_log.close()

    def score_batch(self, requests: list[dict], method: str = "score", **kwargs) -> list[dict]:
        """Each request scored by the version its customer (or pin) is routed to."""
        return score_routed(self.versions.live, requests, self.shadow, self.inference_log, method, **kwargs)

    async def score(self, request: dict) -> dict:
        """One request, batched with the others that arrive at the same time."""
        return await self.batcher.submit(request)

    def pick(self, customer_id: str, pin: str | None = None):
        """The scorer that answers this customer (or pin), or the error result of an unknown pin."""
        live = self.versions.live
        try:
            return live.scorers[live.role_for({"customer_id": customer_id, "pin": pin})]
        except UnknownVersion as e:
            return unknown_version(customer_id, e)

    def status(self) -> dict:
        """The live versions, the canary share and shadow mode, the registry's error and since when,
        the versions refused at load, and the inference log's state."""
        status = self.versions.describe()
        if self.inference_log is not None:
            log = self.inference_log
            status["inference_log"] = {"backlog_rows": log.backlog, "dropped_rows": log.dropped_rows, "write_error": log.write_error}
        return status

    def ready(self) -> bool:
        """The feature store answers (the models were loaded by `start`)."""
        return self.reader.ping()

    def reload(self) -> dict:
        """Follow the registry now (the admin route calls this)."""
        return self.versions.reload()


class Server:
    """The families one process serves (SERVING_FAMILIES), sharing one feature store client."""

    def __init__(self, serving: ServingSettings):
        self.serving = serving
        self.families: dict[str, FamilyServer] = {}

    def start(self, settings: Settings, packed: dict[str, LoadedVersion]) -> None:
        """Load each family from the version packed for it, and start its threads. Feast is
        imported here, in the worker, not by the process that only reads the service's definition."""
        from bentos.online import FeastReader

        fail_fast(self.serving.registry_timeout_s)
        reader = FeastReader(settings, self.serving.store_timeout_s, self.serving.store_retry_s)
        self.families = {name: FamilyServer(name, self.serving, settings) for name in self.serving.served()}
        for name, family in self.families.items():
            family.start(packed[name], reader)

    def stop(self) -> None:
        for family in self.families.values():
            family.stop()

    def status(self) -> dict:
        return {name: family.status() for name, family in self.families.items()}

    def readiness(self) -> dict:
        """Per family, whether it can answer; and why not, when it cannot."""
        checks: dict = {}
        for name, family in self.families.items():
            try:
                checks[name] = bool(family.ready())
            except Exception as e:  # the feature store is not answering: the cause is the log's, not the probe's
                log.warning("%s: not ready: %s", name, e)
                checks[name] = False
                checks[f"{name}_error"] = "store_unavailable"
        return checks

    def reload(self) -> dict:
        return {name: family.reload() for name, family in self.families.items()}
