"""The service's own HTTP path with nothing to score: what (a) would answer if reading the features
and scoring them were free.

    bentoml serve loadtests.baselines.canned_service:CannedAPI --port 3300

The same app and admission limit (bentos/api.py: routes, validation, request ids, the batcher,
per-request metrics, response models) on the same BentoML options, with churn's batches answered by one churn-score
result computed at start (the packed model on one customer of the store) instead of a feature read
and a model. The benchmark runs it as (d): (a)/(d) is the share of the HTTP path's ceiling that
scoring leaves, (d)/(c) the share of the no-op's that the route's own machinery leaves.
"""

from __future__ import annotations

import bentoml

from bentos.admission import Admission
from bentos.api import create_app
from bentos.config import freeze_heap, get_serving_settings, service_options
from bentos.family import Server
from bentos.fastpath import FastPath
from core.settings import get_settings
from scoring.loading import from_bento

SERVING = get_serving_settings().model_copy(update={"families": "churn", "inference_log": False, "registry_poll_s": 0})
server = Server(SERVING)
app = create_app(server)
PROBE_CUSTOMER = "C0000001"


@bentoml.asgi_app(app, path="/")
@bentoml.service(**service_options(SERVING))
class CannedAPI:
    churn_model = bentoml.models.BentoModel("churn:latest")

    def __init__(self) -> None:
        server.start(get_settings(), {"churn": from_bento(self.churn_model, "churn")})
        churn = server.families["churn"]
        [answer] = churn.score_batch([{"customer_id": PROBE_CUSTOMER, "features": None, "pin": None, "request_id": "start"}])
        if "error" in answer:
            raise RuntimeError(f"the store cannot score {PROBE_CUSTOMER}: {answer['error']}")
        churn.batcher.score = lambda requests: [{**answer, "customer_id": r["customer_id"]} for r in requests]
        freeze_heap()


CannedAPI.add_asgi_middleware(Admission, limit=SERVING.max_in_progress)
CannedAPI.add_asgi_middleware(FastPath, server=server)
