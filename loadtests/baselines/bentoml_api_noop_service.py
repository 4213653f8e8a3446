"""BentoML's own API path as a ceiling: a no-op `@bentoml.api` on the service's options and process
layout (bentos/config.py:service_options), taking churn-score's body and answering a constant.
The benchmark runs it as (g), beside the FastAPI no-op (c): the two ways BentoML serves a route.

    bentoml serve loadtests.baselines.bentoml_api_noop_service:BentoApiNoop --port 3500
"""

from __future__ import annotations

import bentoml

from bentos.config import API_PREFIX, freeze_heap, get_serving_settings, service_options

SERVING = get_serving_settings()


@bentoml.service(**service_options(SERVING))
class BentoApiNoop:
    def __init__(self) -> None:
        freeze_heap()

    @bentoml.api(route=f"{API_PREFIX}/churn-score")
    async def churn_score(self, customer_id: str) -> dict:
        return {"customer_id": customer_id, "churn_probability": 0.0}
