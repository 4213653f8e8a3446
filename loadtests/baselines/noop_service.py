"""The framework's ceiling for the benchmark: the same BentoML topology and settings as
bentos/service.py (a FastAPI entry service calling a batchable model service over BentoML's
dependency client) with no work in either.

    bentoml serve loadtests.baselines.noop_service:NoopAPI --port 3200
"""

from __future__ import annotations

import bentoml
from fastapi import FastAPI
from pydantic import BaseModel

from bentos.config import MODEL_SERVICE_OPTIONS, Results, freeze_heap, get_serving_settings

SETTINGS = get_serving_settings()
app = FastAPI(title="no-op ceiling")


class Request(BaseModel):
    customer_id: str


@bentoml.service(workers=SETTINGS.workers, **MODEL_SERVICE_OPTIONS)
class NoopModel:
    def __init__(self) -> None:
        freeze_heap()

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.churn.max_batch_size, max_latency_ms=SETTINGS.churn.max_latency_ms)
    def score(self, requests: list[dict]) -> Results:
        return [{"customer_id": r["customer_id"], "churn_probability": 0.0} for r in requests]


@bentoml.asgi_app(app, path="/")
@bentoml.service(workers=SETTINGS.workers, traffic={"timeout": SETTINGS.request_timeout_s}, logging={"access": {"enabled": False}})
class NoopAPI:
    model = bentoml.depends(NoopModel)

    def __init__(self) -> None:
        freeze_heap()

    @app.post("/api/v1/inference/churn-score")
    async def churn_score(self, body: Request) -> dict:
        [result] = await self.model.to_async.score([body.model_dump()])
        return result
