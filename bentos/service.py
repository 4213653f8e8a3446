"""The HTTP entry service: the public routes, in front of the churn, fraud and segment services.

    bentoml serve bentos.service:FintechAPI          # port 3000

Validation happens here (pydantic), scoring in the model services, which batch concurrent
requests adaptively. Every client error is a JSON 4xx naming the field; nothing a client sends
produces a 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import contextmanager

import aiohttp
import bentoml
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bentos.churn import ChurnModel
from bentos.config import get_serving_settings
from bentos.fraud import FraudModel
from bentos.metrics import metrics, summary
from bentos.schemas import (
    ChurnBatchRequest,
    ChurnBatchResponse,
    ChurnScore,
    CustomerId,
    CustomerRequest,
    ErrorResponse,
    FraudRequest,
    FraudScore,
    SegmentResult,
)
from bentos.scoring import INVALID_FEATURE, UNKNOWN_CUSTOMER
from bentos.segment import SegmentModel

log = logging.getLogger(__name__)
SETTINGS = get_serving_settings()
FAMILIES = ("churn", "fraud", "segment")
# BentoML's batcher learns each model's latency from its first ~15 calls, one at a time; sent
# concurrently, those calls are shed as "overloaded". /ready sends them first, one by one.
WARM_UP_CALLS = 20
PROBE = {"customer_id": "__warm_up__", "request_data": {
    "amount": 10.0, "merchant_category": "groceries", "channel": "pos", "country": "GB", "device_id": "-",
    "transaction_time": 0}}
API_PREFIX = "/api/v1/inference"
ERRORS = {404: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}

app = FastAPI(
    title="fintech-serving",
    description="Churn (with reason codes), fraud and segmentation models, scored from Feast online features.",
    version="1.0",
)


class ClientError(Exception):
    def __init__(self, status: int, error: str, detail: str, fields: list[dict] | None = None):
        self.status, self.error, self.detail, self.fields = status, error, detail, fields or []


@app.exception_handler(ClientError)
async def _client_error(_: Request, e: ClientError) -> JSONResponse:
    return JSONResponse({"error": e.error, "detail": e.detail, "fields": e.fields}, status_code=e.status)


@app.exception_handler(RequestValidationError)
async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
    fields = [{"field": _field(err), "message": err["msg"]} for err in e.errors()]
    return JSONResponse({"error": "invalid_request", "detail": "the request body does not match the schema",
                         "fields": fields}, status_code=422)


@app.exception_handler(bentoml.exceptions.BentoMLException)
async def _upstream(_: Request, e: bentoml.exceptions.BentoMLException) -> JSONResponse:
    """A model service failed or shed the request: the client may retry; it is not their fault."""
    overloaded = isinstance(e, bentoml.exceptions.ServiceUnavailable)
    log.warning("model service error: %s", e)
    return JSONResponse({"error": "overloaded" if overloaded else "model_service_error", "detail": str(e)[:300], "fields": []},
                        status_code=503 if overloaded else 502, headers={"Retry-After": "1"} if overloaded else None)


@app.exception_handler(aiohttp.ClientError)
async def _unreachable(_: Request, e: aiohttp.ClientError) -> JSONResponse:
    log.warning("model service unreachable: %r", e)
    return JSONResponse({"error": "model_service_unreachable", "detail": type(e).__name__, "fields": []},
                        status_code=502)


def _field(error: dict) -> str:
    if error["type"] == "json_invalid":  # its location is a character offset, not a field
        return "body"
    return ".".join(str(part) for part in error["loc"] if part != "body") or "body"


def raise_for(result: dict) -> dict:
    """Turn a model service's error result into the client error it means."""
    if result.get("error") == UNKNOWN_CUSTOMER:
        raise ClientError(404, UNKNOWN_CUSTOMER, f"customer {result['customer_id']!r} is not in the feature store",
                          [{"field": "customer_id", "message": "unknown customer"}])
    if result.get("error") == INVALID_FEATURE:
        raise ClientError(422, INVALID_FEATURE, "the model has no such feature, or it cannot be overridden",
                          [{"field": f, "message": "not a feature of this model"} for f in result["fields"]])
    return result


@contextmanager
def observed(route: str, model: dict):
    """Count the request and time it, labelled by route and model version."""
    m = metrics()
    started = time.perf_counter()
    status = 200
    try:
        yield
    except ClientError as e:
        status = e.status
        raise
    except Exception:
        status = 500
        raise
    finally:
        m.requests.labels(route, model["name"], model["version"], str(status)).inc()
        m.latency.labels(route, model["name"], model["version"]).observe(time.perf_counter() - started)


@bentoml.asgi_app(app, path="/")
@bentoml.service(workers=SETTINGS.workers, traffic={"timeout": 30}, logging={"access": {"enabled": False}})
class FintechAPI:
    churn = bentoml.depends(ChurnModel)
    fraud = bentoml.depends(FraudModel)
    segment = bentoml.depends(SegmentModel)

    def __init__(self) -> None:
        self.models: dict[str, dict] = {}
        self.warmed = False
        self.warm_up_lock = asyncio.Lock()

    async def warm_up(self) -> None:
        async with self.warm_up_lock:
            if self.warmed:
                return
            for family in FAMILIES:
                for _ in range(WARM_UP_CALLS):
                    await getattr(self, family).to_async.score([PROBE])
            self.warmed = True
            log.info("model services warmed up (%d calls each)", WARM_UP_CALLS)

    async def model(self, family: str) -> dict:
        """The registry identity of the version a family serves (asked once, then kept)."""
        if family not in self.models:
            self.models[family] = await getattr(self, family).to_async.status()
        return self.models[family]

    @app.get("/")
    async def info(self) -> dict:
        return {"service": "fintech-serving", "docs": "/docs", "openapi": "/openapi.json",
                "routes": [f"{API_PREFIX}/{r}" for r in ("churn-score", "churn-batch", "segment", "fraud-detection", "explain", "metrics")],
                "models": {f: await self.model(f) for f in FAMILIES}}

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(self) -> JSONResponse:
        """Ready once every model service and the feature store answer, and the batchers are warm."""
        checks = {}
        for family in FAMILIES:
            try:
                checks[family] = bool(await getattr(self, family).to_async.ready())
            except Exception as e:  # a model service or the store is not answering
                checks[family] = False
                checks[f"{family}_error"] = str(e)[:200]
        ok = all(checks[f] for f in FAMILIES)
        if ok and not self.warmed:
            await self.warm_up()
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/models/status")
    async def models_status(self) -> dict:
        return {f: await self.model(f) for f in FAMILIES}

    @app.post(f"{API_PREFIX}/churn-score", response_model=ChurnScore, responses=ERRORS)
    async def churn_score(self, body: CustomerRequest) -> dict:
        with observed("churn-score", await self.model("churn")):
            [result] = await self.churn.to_async.score([body.model_dump()])
            return raise_for(result)

    @app.post(f"{API_PREFIX}/churn-batch", response_model=ChurnBatchResponse, responses=ERRORS)
    async def churn_batch(self, body: ChurnBatchRequest) -> dict:
        model = await self.model("churn")
        with observed("churn-batch", model):
            if len(body.customer_ids) > SETTINGS.max_batch_ids:
                raise ClientError(413, "too_many_ids", f"at most {SETTINGS.max_batch_ids:,} customer ids per call, "
                                  f"got {len(body.customer_ids):,}", [{"field": "customer_ids", "message": "too many"}])
            results = await self.churn.to_async.score_many([{"customer_id": c} for c in body.customer_ids])
            items = [{k: r.get(k) for k in ("customer_id", "churn_probability", "risk_level", "error")} for r in results]
            return {"model": model, "count": len(items), "unknown": sum(1 for r in results if "error" in r), "results": items}

    @app.post(f"{API_PREFIX}/segment", response_model=SegmentResult, responses=ERRORS)
    async def segment_customer(self, body: CustomerRequest) -> dict:
        with observed("segment", await self.model("segment")):
            [result] = await self.segment.to_async.score([body.model_dump()])
            return raise_for(result)

    @app.post(f"{API_PREFIX}/fraud-detection", response_model=FraudScore, responses=ERRORS)
    async def fraud_detection(self, body: FraudRequest) -> dict:
        with observed("fraud-detection", await self.model("fraud")):
            request = {"customer_id": body.customer_id, "request_data": body.transaction.request_data()}
            [result] = await self.fraud.to_async.score([request])
            return raise_for(result)

    @app.get(f"{API_PREFIX}/explain", responses=ERRORS)
    async def explain(self, customer_id: CustomerId | None = Query(None, description="Omit for global importance.")) -> dict:
        with observed("explain", await self.model("churn")):
            if customer_id is None:
                return await self.churn.to_async.global_importance()
            return raise_for(await self.churn.to_async.explain(customer_id))

    @app.get(f"{API_PREFIX}/metrics")
    async def metrics_summary(self) -> dict:
        return summary()
