"""The versions one model family serves, and how they follow the MLflow registry.

The registry says what should be served: the `champion` and `challenger` aliases, and two tags
on the registered model, serving.challenger_share (percent) and serving.shadow. A family
starts on the version packed into its bento, then reads the registry at start, every
`registry_poll_s` seconds and on POST /admin/reload. A change is loaded beside the live set
and swapped in whole: a batch in flight finishes on the set it started with, so nothing fails.
Without a reachable registry the service keeps serving what it has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bentos.canary import choose_role, resolve_pin
from bentos.loading import LoadedVersion, from_registry
from bentos.scoring import ModelInfo
from core.registry import CHALLENGER, CHAMPION, Plan, RegistryUnavailable, read_plan

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

    def describe(self) -> dict:
        return {"versions": [self.scorers[r].info.as_dict() for r in self.scorers],
                "challenger_share": self.share, "shadow": self.shadow}


BuildScorer = Callable[[LoadedVersion, ModelInfo], object]


class Versions:
    """Holds a family's live set and replaces it when the registry changes."""

    def __init__(self, family: str, packed: LoadedVersion, build: BuildScorer, tracking_uri: str, cache_dir: Path,
                 default_share: float = 0.0, default_shadow: bool = False):
        self.family, self.build, self.tracking_uri, self.cache_dir = family, build, tracking_uri, cache_dir
        self.default_share, self.default_shadow = default_share, default_shadow
        self.live = self._assemble(Plan(packed.version), {packed.version: packed})
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def _assemble(self, plan: Plan, loaded: dict[str, LoadedVersion]) -> LiveSet:
        scorers = {CHAMPION: self.build(loaded[plan.champion], loaded[plan.champion].info(CHAMPION))}
        if plan.challenger:
            scorers[CHALLENGER] = self.build(loaded[plan.challenger], loaded[plan.challenger].info(CHALLENGER))
        return LiveSet(self.family, scorers, plan.share, plan.shadow, plan, loaded)

    def reload(self) -> dict:
        """Follow the registry. Returns what is live and whether it changed."""
        with self._lock:
            try:
                plan = read_plan(self.family, self.tracking_uri, self.default_share, self.default_shadow)
            except RegistryUnavailable as e:
                self.last_error = str(e)
                log.warning("%s: keeping %s: %s", self.family, self.live.versions(), e)
                return {**self.live.describe(), "changed": False, "error": self.last_error}
            self.last_error = None
            if plan == self.live.plan:
                return {**self.live.describe(), "changed": False}
            try:
                loaded = {version: self.live.loaded.get(version) or self._download(version)
                          for version in filter(None, (plan.champion, plan.challenger))}
                live = self._assemble(plan, loaded)
            except Exception as e:  # a version that cannot be loaded is not served; the live set stays
                self.last_error = f"cannot load {plan}: {e!r}"[:500]
                log.exception("%s: keeping %s", self.family, self.live.versions())
                return {**self.live.describe(), "changed": False, "error": self.last_error}
            before = self.live.versions()
            self.live = live
            log.info("%s: now serving %s (challenger share %.1f%%, shadow %s; was %s)", self.family,
                     self.live.versions(), plan.share, plan.shadow, before)
            return {**self.live.describe(), "changed": True}

    def _download(self, version: str) -> LoadedVersion:
        return from_registry(self.family, version, self.tracking_uri, self.cache_dir)

    def follow(self, every_s: float) -> threading.Thread:
        """Poll the registry in a daemon thread."""
        def loop():
            while True:
                time.sleep(every_s)
                try:
                    self.reload()
                except Exception:  # polling must outlive any one failure
                    log.exception("%s: reload from the registry failed", self.family)

        thread = threading.Thread(target=loop, name=f"{self.family}-registry", daemon=True)
        thread.start()
        return thread
