"""Shadow scoring: the challenger scores the champion's requests in a background thread.

The caller already has the champion's answer; the shadow result only goes to the metrics (role
"shadow") and to a comparison log, one JSON line per request with both versions' results:

    DATA_DIR/logs/shadow/<family>-<YYYY-MM-DD>.jsonl

When the challenger falls behind, batches are skipped (and counted), never queued without end.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from bentos.metrics import metrics, record_batch, record_failure
from core.families import FAMILIES
from core.registry import SHADOW

log = logging.getLogger(__name__)


def headline(family: str, result: dict):
    """The one number (or segment) two versions are compared on."""
    if "error" in result:
        return None
    return result[FAMILIES[family].score_field]


class ShadowRunner:
    def __init__(self, family: str, log_dir: Path, inference_log=None, max_pending: int = 4):
        self.family, self.log_dir, self.inference_log = family, log_dir, inference_log
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{family}-shadow")
        self._slots = threading.BoundedSemaphore(max_pending)

    def submit(self, challenger, requests: list[dict], answers: list[dict], **kwargs) -> bool:
        """Queue a shadow run; False when skipped because the runner is behind."""
        if not requests:
            return True
        if not self._slots.acquire(blocking=False):
            metrics().shadow_dropped.labels(self.family).inc()
            return False
        future = self._executor.submit(self._run, challenger, requests, answers, kwargs)
        future.add_done_callback(lambda _: self._slots.release())
        return True

    def _run(self, challenger, requests: list[dict], answers: list[dict], kwargs: dict) -> None:
        info = challenger.info
        started = time.perf_counter()
        try:
            shadow = challenger.score(requests, keep_features=self.inference_log is not None, **kwargs)
        except Exception:
            record_failure(self.family, info.version, SHADOW, len(requests))
            log.exception("%s: shadow version %s failed on %d rows", self.family, info.version, len(requests))
            return
        record_batch(self.family, info.version, SHADOW, shadow, time.perf_counter() - started)
        if self.inference_log is not None:
            self.inference_log.append(info.version, SHADOW, challenger.features, requests, shadow)
        self._write(answers, shadow, info.version)

    def _write(self, answers: list[dict], shadow: list[dict], version: str) -> None:
        now = datetime.now(UTC)
        path = self.log_dir / f"{self.family}-{now:%Y-%m-%d}.jsonl"
        lines = [json.dumps({"time": now.isoformat(), "customer_id": answer["customer_id"],
                             "champion_version": answer.get("model", {}).get("version"),
                             "champion": headline(self.family, answer),
                             "challenger_version": version, "challenger": headline(self.family, other)})
                 for answer, other in zip(answers, shadow)]
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write("\n".join(lines) + "\n")
        except OSError as e:
            log.warning("cannot write the shadow log %s: %s", path, e)

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for queued shadow runs (tests, shutdown)."""
        self._executor.submit(lambda: None).result(timeout=timeout_s)
