"""What every scoring route shares, whichever way a request comes in (the FastAPI routes,
bentos/api.py; the fast path, bentos/fastpath.py; the Open Inference Protocol, bentos/oip.py): who
is calling, the version a caller pins, the client errors and the scoring failure with their JSON
bodies, and counting and timing a request under the version that answered.

    with observed("churn-score", "churn") as labels:
        result = await family.score(request)
        labels.update(answered_by(result))
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from bentos.auth import Refused
from bentos.metrics import request_series
from scoring.base import INCOMPLETE_FEATURES, INVALID_FEATURE, STALE_FEATURES, UNKNOWN_CUSTOMER, UNKNOWN_VERSION, StoreUnavailable

log = logging.getLogger(__name__)
PIN_HEADER = "X-Model-Version"
PIN_MAX_LENGTH = 32
REQUEST_ID_PATTERN, REQUEST_ID_MAX_LENGTH = r"^[A-Za-z0-9_.:\-]+$", 64
Pin = Header(None, alias=PIN_HEADER, max_length=PIN_MAX_LENGTH, description=(
    "Answer with this version: a registry version (7) or a role (champion, challenger). Default: the canary split."))

async def caller(request: Request, response: Response, x_request_id: str | None = Header(
        None, max_length=REQUEST_ID_MAX_LENGTH, pattern=REQUEST_ID_PATTERN, description="Your id for this request; default a new one.")) -> dict:
    """What the inference log files this request's predictions under: the request's id (echoed in
    X-Request-ID) and the client that sent it (bentos/auth.py; empty with AUTH_MODE=off).
    (async: FastAPI would run a plain function in its thread pool, a hop per request.)"""
    who = caller_of(request.scope, x_request_id)
    response.headers["X-Request-ID"] = who["request_id"]
    return who


def caller_of(scope: dict, request_id: str | None) -> dict:
    """The request's id (the client's, or a new one) and the client bentos/auth.py identified."""
    client = scope.get("state", {}).get("client")
    return {"request_id": request_id or uuid.uuid4().hex, "client_id": client.client_id if client is not None else ""}


Caller = Annotated[dict, Depends(caller)]


class ClientError(Exception):
    def __init__(self, status: int, error: str, detail: str, fields: list[dict] | None = None):
        self.status, self.error, self.detail, self.fields = status, error, detail, fields or []


class ScoringFailed(Exception):
    """A request could not be scored (the feature store did not answer, a model failed): not the
    client's fault, and worth a retry."""

    def __init__(self, detail: str, error: str = "scoring_failed"):
        super().__init__(detail)
        self.error = error


def raise_for(result: dict) -> dict:
    """Turn a scorer's error result into the client error it means."""
    if result.get("error") == UNKNOWN_CUSTOMER:
        raise ClientError(404, UNKNOWN_CUSTOMER, f"customer {result['customer_id']!r} is not in the feature store",
                          [{"field": "customer_id", "message": "unknown customer"}])
    if result.get("error") == UNKNOWN_VERSION:
        raise ClientError(422, UNKNOWN_VERSION, result["detail"], [{"field": PIN_HEADER, "message": "no such version is served"}])
    if result.get("error") == INCOMPLETE_FEATURES:
        raise ClientError(422, INCOMPLETE_FEATURES, (
            f"customer {result['customer_id']!r} is not in the feature store: to score it as given, `features` must hold "
            f"every feature of the model; {len(result['fields'])} are missing"),
            [{"field": f, "message": "missing (the store does not know the customer)"} for f in result["fields"]])
    if result.get("error") == STALE_FEATURES:
        ages = ", ".join(f"{view} {result['feature_age_s'][view]:,.0f} s" for view in result["views"])
        raise ScoringFailed(f"the online features are older than this service accepts ({ages} old); "
                            "try again once they are fresh", STALE_FEATURES)
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
    handler fills the yielded dict from the scorer's result."""
    started = time.perf_counter()
    status = 200
    labels = {"version": "none", "role": "none"}
    try:
        yield labels
    except (ClientError, Refused) as e:  # Refused: a route's own rate-limit charge
        status = e.status
        raise
    except ScoringFailed:  # already the answer: stale features
        status = 503
        raise
    except StoreUnavailable as e:  # the client gets a stable code; the store's address is the log's
        status = 503
        log.warning("%s: %s", route, e)
        raise ScoringFailed("the feature store did not answer; try again after Retry-After", "store_unavailable") from e
    except Exception as e:
        status = 503
        log.exception("%s: scoring failed", route)
        raise ScoringFailed("the request could not be scored; the service's log has the cause") from e
    finally:
        count, latency = request_series(route, family, labels["version"], labels["role"], status)
        count.inc()
        latency.observe(time.perf_counter() - started)


def client_error_response(e: ClientError) -> JSONResponse:
    return JSONResponse({"error": e.error, "detail": e.detail, "fields": e.fields}, status_code=e.status)


def scoring_failed_response(e: ScoringFailed, retry_after_s: int) -> JSONResponse:
    return JSONResponse({"error": e.error, "detail": str(e), "fields": []}, status_code=503,
                        headers={"Retry-After": str(retry_after_s)})


def retry_after(serving) -> int:
    """What a 503 tells the client to wait: the store's fail-fast window, in whole seconds."""
    return max(1, math.ceil(serving.store_retry_s))


async def score_one(server, route: str, family: str, request: dict) -> dict:
    """One request to a family, counted under the version that answered."""
    with observed(route, family) as labels:
        result = await server.families[family].score(request)
        labels.update(answered_by(result))
        return raise_for(result)
