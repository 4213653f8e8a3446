"""Fraud model service: fraud probability of a transaction and the decision at the stored threshold."""

from __future__ import annotations

import bentoml

from bentos.base import ModelService
from bentos.config import MODEL_SERVICE_OPTIONS, get_serving_settings
from bentos.loading import load_booster, model_info
from bentos.metrics import metrics
from bentos.online import FeastReader
from bentos.scoring import FraudScorer
from training.settings import get_settings

SETTINGS = get_serving_settings()


@bentoml.service(workers=SETTINGS.workers, **MODEL_SERVICE_OPTIONS)
class FraudModel(ModelService):
    bento_model = bentoml.models.BentoModel("fraud:latest")

    def __init__(self) -> None:
        self.info, metadata = model_info(self.bento_model, "fraud")
        self.scorer = FraudScorer(load_booster(self.bento_model), metadata, self.info,
                                  FeastReader(get_settings()), SETTINGS.top_reasons)

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.fraud.max_batch_size, max_latency_ms=SETTINGS.fraud.max_latency_ms)
    def score(self, requests: list[dict]) -> list[dict]:
        """Score a batch of {customer_id, request_data: transaction fields} requests."""
        metrics().batch_size.labels(self.info.name, self.info.version).observe(len(requests))
        return self.scorer.score(requests)
