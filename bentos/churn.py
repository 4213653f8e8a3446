"""Churn model service: calibrated churn probability, risk level and reason codes by customer id."""

from __future__ import annotations

import bentoml

from bentos.base import ModelService
from bentos.config import MODEL_SERVICE_OPTIONS, get_serving_settings
from bentos.loading import global_importance, load_booster, model_info
from bentos.metrics import metrics
from bentos.online import FeastReader
from bentos.scoring import ChurnScorer
from training.settings import get_settings

SETTINGS = get_serving_settings()


@bentoml.service(workers=SETTINGS.workers, **MODEL_SERVICE_OPTIONS)
class ChurnModel(ModelService):
    bento_model = bentoml.models.BentoModel("churn:latest")

    def __init__(self) -> None:
        self.info, metadata = model_info(self.bento_model, "churn")
        self.scorer = ChurnScorer(load_booster(self.bento_model), metadata, self.info,
                                  FeastReader(get_settings()), SETTINGS.top_reasons)
        self.importance = global_importance(self.bento_model)

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.churn.max_batch_size, max_latency_ms=SETTINGS.churn.max_latency_ms)
    def score(self, requests: list[dict]) -> list[dict]:
        """Score a batch of {customer_id, features?} requests, with reason codes."""
        metrics().batch_size.labels(self.info.name, self.info.version).observe(len(requests))
        return self.scorer.score(requests)

    @bentoml.api
    def score_many(self, requests: list[dict]) -> list[dict]:
        """Score one large batch in a single store read, without reason codes (churn-batch)."""
        return self.scorer.score(requests, reasons=False)

    @bentoml.api
    def explain(self, customer_id: str) -> dict:
        return self.scorer.explain(customer_id)

    @bentoml.api
    def global_importance(self) -> dict:
        return {"model": self.info.as_dict(), "kind": "global_importance", "mean_abs_shap": self.importance}
