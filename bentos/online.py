"""Online features from the Feast store the pipeline materialized (SQLite or Redis)."""

from __future__ import annotations

import time

from bentos.metrics import metrics
from training.settings import Settings
from training.store import open_store

PROBE_FEATURE = "customer_activity:days_since_last_txn"


class FeastReader:
    """One `get_online_features` call per batch of rows, for one FeatureService."""

    def __init__(self, settings: Settings):
        self.store = open_store(settings)
        self._services: dict = {}

    def _service(self, name: str):
        if name not in self._services:
            self._services[name] = self.store.get_feature_service(name)
        return self._services[name]

    def read(self, feature_service: str, rows: list[dict]) -> dict[str, list]:
        """Feature values per row; the event times come along (at no measurable cost) for the age metric."""
        values = self.store.get_online_features(features=self._service(feature_service), entity_rows=rows).to_dict(
            include_event_timestamps=True)
        observe_age(feature_service, values)
        return values

    def ping(self) -> bool:
        """The store answers: one feature of a customer that need not exist."""
        self.store.get_online_features(features=[PROBE_FEATURE], entity_rows=[{"customer_id": "__readiness_probe__"}])
        return True


def observe_age(feature_service: str, values: dict[str, list]) -> None:
    """Age of each known row's oldest feature view; 0 stands for "no value" (unknown customer,
    request-time features)."""
    stamps = [v for k, v in values.items() if k.endswith("__ts") and k != "customer_id__ts"]
    if not stamps:
        return
    now = time.time()
    histogram = metrics().feature_age.labels(feature_service)
    for row in zip(*stamps):
        known = [t for t in row if t]
        if known:
            histogram.observe(now - min(known))
