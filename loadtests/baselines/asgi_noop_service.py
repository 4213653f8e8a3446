"""The floor under the no-op (c): the same BentoML options and process layout, and a bare ASGI
app that reads the churn-score body, decodes it and answers a constant, with no FastAPI.
The benchmark runs it as (e): (c)/(e) is the share of BentoML's own ceiling that FastAPI's routing,
dependencies and validation leave.

    bentoml serve loadtests.baselines.asgi_noop_service:AsgiNoopAPI --port 3400
"""

from __future__ import annotations

import json

import bentoml

from bentos.config import freeze_heap, get_serving_settings, service_options

SERVING = get_serving_settings()


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    answer = json.dumps({"customer_id": json.loads(body)["customer_id"], "churn_probability": 0.0}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@bentoml.asgi_app(app, path="/")
@bentoml.service(**service_options(SERVING))
class AsgiNoopAPI:
    def __init__(self) -> None:
        freeze_heap()
