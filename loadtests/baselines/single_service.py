"""A design experiment for the benchmark: the churn scorer's batchable API served directly by one
BentoML service (two workers), with no entry service in front, so no hop between processes.

    bentoml serve loadtests.baselines.single_service:SingleChurn --port 3300
    POST /score  {"requests": [{"customer_id": "C0000001"}]}

Same model, store, scoring code and batching settings as bentos/churn.py.
"""

from __future__ import annotations

import bentoml

from bentos.config import MODEL_SERVICE_OPTIONS, Results, freeze_heap, get_serving_settings
from bentos.loading import from_bento
from bentos.online import FeastReader
from bentos.scoring import ChurnScorer
from training.settings import get_settings

SETTINGS = get_serving_settings()


@bentoml.service(workers=2, **MODEL_SERVICE_OPTIONS)
class SingleChurn:
    bento_model = bentoml.models.BentoModel("churn:latest")

    def __init__(self) -> None:
        loaded = from_bento(self.bento_model, "churn")
        self.scorer = ChurnScorer(loaded.model, loaded.metadata, loaded.info("champion"), FeastReader(get_settings()))
        freeze_heap()

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.churn.max_batch_size, max_latency_ms=SETTINGS.churn.max_latency_ms,
                 route="/score")
    def score(self, requests: list[dict]) -> Results:
        return self.scorer.score(requests)
