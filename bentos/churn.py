"""Churn model service: calibrated churn probability, risk level and reason codes by customer id."""

from __future__ import annotations

import bentoml

from bentos.base import ModelService
from bentos.config import MODEL_SERVICE_OPTIONS, Results, get_serving_settings
from bentos.scoring import ChurnScorer

SETTINGS = get_serving_settings()


@bentoml.service(workers=SETTINGS.workers, **MODEL_SERVICE_OPTIONS)
class ChurnModel(ModelService):
    family = "churn"
    bento_model = bentoml.models.BentoModel("churn:latest")

    def __init__(self) -> None:
        self.start()

    def build(self, loaded, info) -> ChurnScorer:
        return ChurnScorer(loaded.model, loaded.metadata, info, self.reader, SETTINGS.top_reasons, loaded.importance)

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.churn.max_batch_size, max_latency_ms=SETTINGS.churn.max_latency_ms)
    def score(self, requests: list[dict]) -> Results:
        """Score a batch of {customer_id, features?, pin?} requests, with reason codes."""
        return self.score_requests(requests)

    @bentoml.api
    def score_many(self, requests: list[dict]) -> Results:
        """Score one large batch in a single store read per version, without reason codes (churn-batch)."""
        return self.score_requests(requests, reasons=False)

    @bentoml.api
    def explain(self, customer_id: str, pin: str | None = None) -> dict:
        """Exact SHAP values from the version that scores this customer."""
        scorer = self.pick(customer_id, pin)
        return scorer if isinstance(scorer, dict) else scorer.explain(customer_id)

    @bentoml.api
    def global_importance(self, pin: str | None = None) -> dict:
        """Mean |SHAP| per feature of the champion, or of the pinned version."""
        scorer = self.pick("", pin or "champion")
        if isinstance(scorer, dict):
            return scorer
        return {"model": scorer.info.as_dict(), "kind": "global_importance", "mean_abs_shap": scorer.importance}
