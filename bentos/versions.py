"""The versions one model family serves, and how they follow the MLflow registry.

The registry says what should be served: the `champion` and `challenger` aliases, and two tags
on the registered model, serving.challenger_share (percent) and serving.shadow. A family
starts on the version packed into its bento, then reads the registry at start, every
`registry_poll_s` seconds (backing off while the registry fails) and on POST /admin/reload. A
change is loaded and checked beside the live set and swapped in whole: a batch in flight finishes
on the set it started with, so nothing fails. Without a reachable registry, or with a version that
fails its checks, the service keeps serving what it has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bentos.canary import choose_role, resolve_pin
from core.registry import CHALLENGER, CHAMPION, Plan, RegistryUnavailable, read_plan
from scoring.base import ModelInfo
from scoring.loading import LoadedVersion, VersionRefused, from_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveSet:
    """The scorers answering now, by role. Immutable: a reload builds a new one."""

    family: str
    scorers: dict[str, object]
    share: float
    shadow: bool
    plan: Plan
    loaded: dict[str, LoadedVersion] = field(repr=False)

    @property
    def challenger(self):
        return self.scorers.get(CHALLENGER)

    def versions(self) -> dict[str, str]:
        return {role: scorer.info.version for role, scorer in self.scorers.items()}

    def role_for(self, request: dict) -> str:
        """Raises bentos.canary.UnknownVersion for a pin that names no live version."""
        if pin := request.get("pin"):
            return resolve_pin(pin, self.versions())
        return choose_role(self.family, request["customer_id"], self.share, CHALLENGER in self.scorers)

    def asked_refused(self) -> list[str]:
        """The versions the registry names that were refused at load."""
        return [v for v in (self.asked.champion, self.asked.challenger) if v in self.refused] if self.asked else []

    def describe(self) -> dict:
        return {"versions": [self.scorers[r].info.as_dict() for r in self.scorers],
                "challenger_share": self.share, "shadow": self.shadow}


BuildScorer = Callable[[LoadedVersion, ModelInfo], object]


class Versions:
    """Holds a family's live set and replaces it when the registry changes.

    Two kinds of failure, kept apart: the registry cannot be read (or a download fails), which is
    tried again, less often the longer it lasts; and a version is refused at load (its files, its
    features or its scores; bentos/family.py `checked_scorer`), which is final for that version:
    the registry must name another one. Either way the live set keeps serving."""

    def __init__(self, family: str, packed: LoadedVersion, build: BuildScorer, tracking_uri: str, cache_dir: Path,
                 default_share: float = 0.0, default_shadow: bool = False,
                 on_change: Callable[[Versions], None] | None = None):
        self.family, self.build, self.tracking_uri, self.cache_dir = family, build, tracking_uri, cache_dir
        self.default_share, self.default_shadow = default_share, default_shadow
        self.live = self._assemble(Plan(packed.version), {packed.version: packed})
        self.last_error: str | None = None
        self.error_since: datetime | None = None  # when the registry stopped answering
        self.failures = 0  # reads in a row that failed
        self.refused: dict[str, str] = {}  # version: why it is not served
        self.asked: Plan | None = None  # what the registry named at its last answer
        self.on_change = on_change or (lambda versions: None)
        self._lock = threading.Lock()

    def _assemble(self, plan: Plan, loaded: dict[str, LoadedVersion]) -> LiveSet:
        scorers = {CHAMPION: self.build(loaded[plan.champion], loaded[plan.champion].info(CHAMPION))}
        if plan.challenger:
            scorers[CHALLENGER] = self.build(loaded[plan.challenger], loaded[plan.challenger].info(CHALLENGER))
        return LiveSet(self.family, scorers, plan.share, plan.shadow, plan, loaded)

    def reload(self) -> dict:
        """Follow the registry. Returns what is live, whether it changed, and the error if any."""
        with self._lock:
            try:
                result = self._follow(read_plan(self.family, self.tracking_uri, self.default_share, self.default_shadow))
            except Exception as e:  # the registry, or a download from it: the next poll tries again
                result = self._failed(f"{e}"[:500] if isinstance(e, RegistryUnavailable) else f"{type(e).__name__}: {e}"[:500])
            self.on_change(self)
            return result

    def _follow(self, plan: Plan) -> dict:
        if self.last_error is not None:
            log.info("%s: the registry answers again, after %d failed reads since %s", self.family, self.failures,
                     self.error_since.isoformat(timespec="seconds"))
        self.last_error, self.error_since, self.failures, self.asked = None, None, 0, plan
        wanted = [version for version in (plan.champion, plan.challenger) if version]
        if refused := {version: self.refused[version] for version in wanted if version in self.refused}:
            return {**self.live.describe(), "changed": False, "refused": refused}
        if plan == self.live.plan:
            return {**self.live.describe(), "changed": False}
        try:
            live = self._assemble(plan, {version: self.live.loaded.get(version) or self._download(version) for version in wanted})
        except VersionRefused as e:
            self.refused[e.version] = str(e)
            log.error("%s: refused version %s, still serving %s: %s", self.family, e.version, self.live.versions(), e)
            return {**self.live.describe(), "changed": False, "refused": {e.version: str(e)}}
        before = self.live.versions()
        self.live = live
        log.info("%s: now serving %s (challenger share %.1f%%, shadow %s; was %s)", self.family,
                 self.live.versions(), plan.share, plan.shadow, before)
        return {**self.live.describe(), "changed": True}

    def _failed(self, error: str) -> dict:
        self.error_since = self.error_since or datetime.now(UTC)
        self.failures += 1
        self.last_error = error
        log.warning("%s: keeping %s; registry read %d failed (since %s): %s", self.family, self.live.versions(),
                    self.failures, self.error_since.isoformat(timespec="seconds"), error)
        return {**self.live.describe(), "changed": False, "error": error}

    def _download(self, version: str) -> LoadedVersion:
        return from_registry(self.family, version, self.tracking_uri, self.cache_dir)

    def next_poll_s(self, every_s: float, max_s: float) -> float:
        """Seconds to the next poll: every_s, doubled for each failed read in a row, up to max_s."""
        return min(every_s * 2 ** min(self.failures, 16), max(every_s, max_s))

    def asked_refused(self) -> list[str]:
        """The versions the registry names that were refused at load."""
        return [v for v in (self.asked.champion, self.asked.challenger) if v in self.refused] if self.asked else []

    def describe(self) -> dict:
        """What is live, and what the registry asked for that could not be had."""
        return {**self.live.describe(), "retrain_cycle": self.asked.cycle if self.asked else None,
                "registry_error": self.last_error,
                "registry_error_since": self.error_since.isoformat(timespec="seconds") if self.error_since else None,
                "registry_failures": self.failures, "refused_versions": dict(self.refused)}

    def follow(self, every_s: float, max_s: float) -> threading.Thread:
        """Poll the registry in a daemon thread, backing off while it fails."""
        def loop():
            while True:
                time.sleep(self.next_poll_s(every_s, max_s))
                try:
                    self.reload()
                except Exception:  # polling must outlive any one failure
                    log.exception("%s: reload from the registry failed", self.family)

        thread = threading.Thread(target=loop, name=f"{self.family}-registry", daemon=True)
        thread.start()
        return thread
