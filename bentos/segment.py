"""Segmentation model service: the customer's segment id and its name."""

from __future__ import annotations

import bentoml

from bentos.base import ModelService
from bentos.config import MODEL_SERVICE_OPTIONS, get_serving_settings
from bentos.loading import load_sklearn, model_info
from bentos.metrics import metrics
from bentos.online import FeastReader
from bentos.scoring import SegmentScorer
from training.settings import get_settings

SETTINGS = get_serving_settings()


@bentoml.service(workers=SETTINGS.workers, **MODEL_SERVICE_OPTIONS)
class SegmentModel(ModelService):
    bento_model = bentoml.models.BentoModel("segment:latest")

    def __init__(self) -> None:
        self.info, metadata = model_info(self.bento_model, "segment")
        self.scorer = SegmentScorer(load_sklearn(self.bento_model), metadata, self.info, FeastReader(get_settings()))

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.segment.max_batch_size, max_latency_ms=SETTINGS.segment.max_latency_ms)
    def score(self, requests: list[dict]) -> list[dict]:
        metrics().batch_size.labels(self.info.name, self.info.version).observe(len(requests))
        return self.scorer.score(requests)
