"""Fraud model service: fraud probability of a transaction and the decision at the stored threshold."""

from __future__ import annotations

import bentoml

from bentos.base import ModelService
from bentos.config import MODEL_SERVICE_OPTIONS, Results, get_serving_settings
from bentos.scoring import FraudScorer

SETTINGS = get_serving_settings()


@bentoml.service(workers=SETTINGS.workers, **MODEL_SERVICE_OPTIONS)
class FraudModel(ModelService):
    family = "fraud"
    bento_model = bentoml.models.BentoModel("fraud:latest")

    def __init__(self) -> None:
        self.start()

    def build(self, loaded, info) -> FraudScorer:
        return FraudScorer(loaded.model, loaded.metadata, info, self.reader, SETTINGS.top_reasons)

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.fraud.max_batch_size, max_latency_ms=SETTINGS.fraud.max_latency_ms)
    def score(self, requests: list[dict]) -> Results:
        """Score a batch of {customer_id, request_data: transaction fields, pin?} requests."""
        return self.score_requests(requests)
