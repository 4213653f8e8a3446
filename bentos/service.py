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
import uuid
from contextlib import contextmanager
from typing import Annotated

import aiohttp
import bentoml
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bentos.churn import ChurnModel
from bentos.config import freeze_heap, get_serving_settings
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
from bentos.scoring import INVALID_FEATURE, UNKNOWN_CUSTOMER, UNKNOWN_VERSION
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
PIN_HEADER = "X-Model-Version"
Pin = Header(None, alias=PIN_HEADER, max_length=32, description=(
    "Answer with this version: a registry version (7) or a role (champion, challenger). Default: the canary split."))


async def request_id(response: Response, x_request_id: str | None = Header(
        None, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$", description="Your id for this request; default a new one.")) -> str:
    """The id the inference log files this request's prediction under, echoed in X-Request-ID.
    (async: FastAPI would run a plain function in its thread pool, a hop per request.)"""
    rid = x_request_id or uuid.uuid4().hex
    response.headers["X-Request-ID"] = rid
    return rid


RequestId = Annotated[str, Depends(request_id)]
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
    if result.get("error") == UNKNOWN_VERSION:
        raise ClientError(422, UNKNOWN_VERSION, result["detail"], [{"field": PIN_HEADER, "message": "no such version is served"}])
    if result.get("error") == INVALID_FEATURE:
        raise ClientError(422, INVALID_FEATURE, "the model has no such feature, or it cannot be overridden",
                          [{"field": f, "message": "not a feature of this model"} for f in result["fields"]])
    return result


def answered_by(result: dict) -> dict:
    """The labels of the version that answered (none for a request no version scored)."""
    model = result.get("model") or {}
    return {"version": model.get("version", "none"), "role": model.get("role", "none")}


@contextmanager
def observed(route: str, family: str):
    """Count the request and time it, labelled by route and the version that answered: the
    handler fills the yielded dict from the model service's result."""
    m = metrics()
    started = time.perf_counter()
    status = 200
    labels = {"version": "none", "role": "none"}
    try:
        yield labels
    except ClientError as e:
        status = e.status
        raise
    except Exception:
        status = 500
        raise
    finally:
        m.requests.labels(route, family, labels["version"], labels["role"], str(status)).inc()
        m.latency.labels(route, family, labels["version"], labels["role"]).observe(time.perf_counter() - started)


@bentoml.asgi_app(app, path="/")
@bentoml.service(workers=SETTINGS.workers, traffic={"timeout": SETTINGS.request_timeout_s}, logging={"access": {"enabled": False}})
class FintechAPI:
    churn = bentoml.depends(ChurnModel)
    fraud = bentoml.depends(FraudModel)
    segment = bentoml.depends(SegmentModel)

    def __init__(self) -> None:
        self.warmed = False
        self.warm_up_lock = asyncio.Lock()
        freeze_heap()

    async def warm_up(self) -> None:
        async with self.warm_up_lock:
            if self.warmed:
                return
            for family in FAMILIES:
                for _ in range(WARM_UP_CALLS):
                    await getattr(self, family).to_async.score([PROBE])
            self.warmed = True
            log.info("model services warmed up (%d calls each)", WARM_UP_CALLS)

    async def status(self) -> dict:
        """What each family serves now: versions and roles, canary share, shadow mode."""
        return {f: await getattr(self, f).to_async.status() for f in FAMILIES}

    async def score_one(self, route: str, family: str, request: dict) -> dict:
        """One request to a family's batchable score, counted under the version that answered."""
        with observed(route, family) as labels:
            [result] = await getattr(self, family).to_async.score([request])
            labels.update(answered_by(result))
            return raise_for(result)

    @app.get("/")
    async def info(self) -> dict:
        return {"service": "fintech-serving", "docs": "/docs", "openapi": "/openapi.json",
                "routes": [f"{API_PREFIX}/{r}" for r in ("churn-score", "churn-batch", "segment", "fraud-detection", "explain", "metrics")],
                "models": await self.status()}

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
        return await self.status()

    @app.post("/admin/reload")
    async def reload(self, authorization: str | None = Header(None)) -> dict:
        """Follow the registry now (the model services also poll it). Each family loads any new
        version beside the live one and swaps it in without failing a request in flight."""
        if SETTINGS.admin_token and authorization != f"Bearer {SETTINGS.admin_token}":
            raise ClientError(401, "unauthorized", "this route needs the admin token", [{"field": "Authorization", "message": "missing or wrong"}])
        return {f: await getattr(self, f).to_async.reload() for f in FAMILIES}

    @app.post(f"{API_PREFIX}/churn-score", response_model=ChurnScore, responses=ERRORS)
    async def churn_score(self, body: CustomerRequest, rid: RequestId, pin: str | None = Pin) -> dict:
        return await self.score_one("churn-score", "churn", {**body.model_dump(), "pin": pin, "request_id": rid})

    @app.post(f"{API_PREFIX}/churn-batch", response_model=ChurnBatchResponse, responses=ERRORS)
    async def churn_batch(self, body: ChurnBatchRequest, rid: RequestId, pin: str | None = Pin) -> dict:
        with observed("churn-batch", "churn") as labels:
            if len(body.customer_ids) > SETTINGS.max_batch_ids:
                raise ClientError(413, "too_many_ids", f"at most {SETTINGS.max_batch_ids:,} customer ids per call, "
                                  f"got {len(body.customer_ids):,}", [{"field": "customer_ids", "message": "too many"}])
            results = await self.churn.to_async.score_many([{"customer_id": c, "pin": pin, "request_id": rid}
                                                             for c in body.customer_ids])
            for result in results:
                if result.get("error") == UNKNOWN_VERSION:
                    raise_for(result)
            models = sorted({r["model"]["version"]: r["model"] for r in results if "error" not in r}.values(),
                            key=lambda m: m["role"])
            labels.update(answered_by({"model": models[0]} if models else {}))
            items = [{"customer_id": r["customer_id"], "churn_probability": r.get("churn_probability"),
                      "risk_level": r.get("risk_level"), "version": None if "error" in r else r["model"]["version"],
                      "error": r.get("error")}
                     for r in results]
            return {"models": models, "count": len(items),
                    "unknown": sum(1 for r in results if "error" in r), "results": items}

    @app.post(f"{API_PREFIX}/segment", response_model=SegmentResult, responses=ERRORS)
    async def segment_customer(self, body: CustomerRequest, rid: RequestId, pin: str | None = Pin) -> dict:
        return await self.score_one("segment", "segment", {**body.model_dump(), "pin": pin, "request_id": rid})

    @app.post(f"{API_PREFIX}/fraud-detection", response_model=FraudScore, responses=ERRORS)
    async def fraud_detection(self, body: FraudRequest, rid: RequestId, pin: str | None = Pin) -> dict:
        return await self.score_one("fraud-detection", "fraud", {
            "customer_id": body.customer_id, "request_data": body.transaction.request_data(), "pin": pin, "request_id": rid})

    @app.get(f"{API_PREFIX}/explain", responses=ERRORS)
    async def explain(self, customer_id: CustomerId | None = Query(None, description="Omit for global importance."),
                      pin: str | None = Pin) -> dict:
        with observed("explain", "churn") as labels:
            if customer_id is None:
                result = await self.churn.to_async.global_importance(pin=pin)
            else:
                result = await self.churn.to_async.explain(customer_id, pin=pin)
            labels.update(answered_by(result))
            return raise_for(result)

    @app.get(f"{API_PREFIX}/metrics")
    async def metrics_summary(self) -> dict:
        return summary()
