"""Segmentation model service: the customer's segment id and its name."""

from __future__ import annotations

import bentoml

from bentos.base import ModelService
from bentos.config import MODEL_SERVICE_OPTIONS, Results, get_serving_settings
from bentos.scoring import SegmentScorer

SETTINGS = get_serving_settings()


@bentoml.service(workers=SETTINGS.workers, **MODEL_SERVICE_OPTIONS)
class SegmentModel(ModelService):
    family = "segment"
    bento_model = bentoml.models.BentoModel("segment:latest")

    def __init__(self) -> None:
        self.start()

    def build(self, loaded, info) -> SegmentScorer:
        return SegmentScorer(loaded.model, loaded.metadata, info, self.reader)

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.segment.max_batch_size, max_latency_ms=SETTINGS.segment.max_latency_ms)
    def score(self, requests: list[dict]) -> Results:
        """Score a batch of {customer_id, features?, pin?} requests."""
        return self.score_requests(requests)
