"""The framework's ceiling for the benchmark: the service's process layout and BentoML options
(bentos/config.py:service_options) and the same FastAPI validation of the churn-score body and
request id, with no feature read and no model.

    bentoml serve loadtests.baselines.noop_service:NoopAPI --port 3200
"""

from __future__ import annotations

import bentoml
from fastapi import FastAPI

from bentos.config import API_PREFIX, freeze_heap, get_serving_settings, service_options
from bentos.handling import Caller
from bentos.schemas import CustomerRequest

SERVING = get_serving_settings()
app = FastAPI(title="no-op ceiling")


@app.post(f"{API_PREFIX}/churn-score")
async def churn_score(body: CustomerRequest, who: Caller) -> dict:
    return {"customer_id": body.customer_id, "churn_probability": 0.0}


@bentoml.asgi_app(app, path="/")
@bentoml.service(**service_options(SERVING))
class NoopAPI:
    def __init__(self) -> None:
        freeze_heap()
