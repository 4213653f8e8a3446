"""What every model service shares: the versions it serves (champion, maybe a challenger),
routing each request to one of them, shadow scoring, and the status, ready and reload APIs.

A family service sets `family` and `bento_model`, says how to build a scorer from a loaded
version (`build`), and calls `start()` in its __init__.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from pathlib import Path

import bentoml

from bentos.canary import CHALLENGER, CHAMPION, UnknownVersion
from bentos.config import freeze_heap, get_serving_settings
from bentos.loading import LoadedVersion, from_bento
from bentos.metrics import metrics, record_batch, record_failure
from bentos.online import FeastReader
from bentos.scoring import UNKNOWN_VERSION, ModelInfo
from bentos.shadow import ShadowRunner
from bentos.versions import LiveSet, Versions
from monitoring.drift import latest_summary
from monitoring.inference_log import InferenceLog
from training.settings import get_settings

log = logging.getLogger(__name__)


def score_as(live: LiveSet, role: str, requests: list[dict], inference_log: InferenceLog | None = None, method: str = "score",
             **kwargs) -> list[dict]:
    """Score with one role's version and log the predictions. A failing challenger hands its
    requests to the champion (the failure is counted against it): a canary never costs a caller an answer."""
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
    record_batch(live.family, scorer.info.version, role, results, time.perf_counter() - started)
    if inference_log is not None:
        inference_log.append(scorer.info.version, role, scorer.features, requests, results)
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
            summary = latest_summary(reports_dir, family)
            if summary is not None:
                metrics().drift_share.labels(family, str(summary["version"])).set(summary["drift_share"])
            time.sleep(every_s)

    thread = threading.Thread(target=loop, name=f"{family}-drift", daemon=True)
    thread.start()
    return thread


class ModelService:
    """Mixed into the churn, fraud and segment services."""

    family: str
    bento_model: bentoml.models.BentoModel

    def build(self, loaded: LoadedVersion, info: ModelInfo):
        raise NotImplementedError

    def start(self) -> None:
        serving, settings = get_serving_settings(), get_settings()
        own = serving.family(self.family)
        self.reader = FeastReader(settings)
        self.versions = Versions(self.family, from_bento(self.bento_model, self.family), self.build, settings.tracking_uri,
                                 serving.model_cache or settings.data_dir / "model_cache", own.challenger_share, own.shadow)
        self.versions.reload()
        if serving.registry_poll_s:
            self.versions.follow(serving.registry_poll_s)
        self.inference_log = InferenceLog(serving.inference_log_dir or settings.data_dir / "inference_log", self.family,
                                          flush_s=serving.inference_log_flush_s, on_backlog=self._backlog
                                          ) if serving.inference_log else None
        self.shadow = ShadowRunner(self.family, settings.data_dir / "logs" / "shadow", self.inference_log)

        watch_drift(self.family, settings.data_dir / "reports" / "drift", serving.registry_poll_s or 60.0)
        freeze_heap()

    def _backlog(self, rows: int) -> None:
        metrics().log_backlog.labels(self.family).set(rows)

    @bentoml.on_shutdown
    def stop(self) -> None:
        """Write the inference log's last rows before the process exits."""
        if self.inference_log is not None:
            self.inference_log.close()

    def pick(self, customer_id: str, pin: str | None = None):
        """The scorer that answers this customer (or pin), or the error result of an unknown pin."""
        live = self.versions.live
        try:
            return live.scorers[live.role_for({"customer_id": customer_id, "pin": pin})]
        except UnknownVersion as e:
            return unknown_version(customer_id, e)

    def score_requests(self, requests: list[dict], method: str = "score", **kwargs) -> list[dict]:
        return score_routed(self.versions.live, requests, self.shadow, self.inference_log, method, **kwargs)

    @bentoml.api
    def status(self) -> dict:
        """The live versions, the canary share and shadow mode, and the last registry error."""
        return {**self.versions.live.describe(), "registry_error": self.versions.last_error}

    @bentoml.api
    def ready(self) -> bool:
        """The feature store answers (the models were loaded in __init__)."""
        return self.reader.ping()

    @bentoml.api
    def reload(self) -> dict:
        """Follow the registry now (the admin route calls this)."""
        return self.versions.reload()
