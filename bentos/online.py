"""Online features from the Feast store the pipeline materialized (SQLite or Redis)."""

from __future__ import annotations

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
        return self.store.get_online_features(features=self._service(feature_service), entity_rows=rows).to_dict()

    def ping(self) -> bool:
        """The store answers: one feature of a customer that need not exist."""
        self.store.get_online_features(features=[PROBE_FEATURE], entity_rows=[{"customer_id": "__readiness_probe__"}])
        return True
