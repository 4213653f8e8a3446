"""The scoring routes in one table: each route's path, the family that answers it, the scope a
client needs, its request and response models, and the handler that answers it. FastAPI's routes
(bentos/api.py), the fast path's (bentos/fastpath.py), the admission count and the scope map that
authentication checks (bentos/auth.py) are all built from it.

    [r.url for r in ROUTES if r.family == "churn"]   # ["/api/v1/inference/churn-score", ...]
    PATH_SCOPES["/api/v1/inference/explain"]             # "explain"

A route whose handler is "score" is one request scored by its family: the fast path answers it
when the request is clean, FastAPI's route otherwise, both through `request` (the family's request
from the validated body) and, on the fast path, `answer` (the response body, field by field in the
response model's order, without validating it again: tests/unit/test_fastpath.py holds each equal,
byte for byte, to what the model's own serialiser makes of the same result).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from bentos.config import API_PREFIX, PROTOCOL_PREFIX
from bentos.schemas import (
    ChurnBatchRequest,
    ChurnBatchResponse,
    ChurnScore,
    CustomerRequest,
    FeatureSources,
    FraudRequest,
    FraudScore,
    SegmentResult,
)

STORE_NOTE = FeatureSources.model_fields["store"].default


def customer_request(body: CustomerRequest, pin: str | None, who: dict) -> dict:
    """What churn-score and segment hand their family: the body, the pinned version, the caller."""
    return {**body.model_dump(), "pin": pin, **who}


def fraud_request(body: FraudRequest, pin: str | None, who: dict) -> dict:
    return {"customer_id": body.customer_id, "request_data": body.transaction.request_data(), "pin": pin, **who}


def _model(m: dict) -> dict:
    return {"name": m["name"], "version": m["version"], "role": m["role"], "feature_service": m["feature_service"]}


def _sources(s: dict) -> dict:
    return {"request": s["request"], "default": s["default"], "store": STORE_NOTE}


def public_reasons(reasons: list[dict]) -> list[dict]:
    """Reasons as an answer gives them: a customer's stored values are explain's alone."""
    return [{"feature": r["feature"], "code": r["code"], "sentence": r["sentence"], "shap_value": r["shap_value"],
             "direction": r["direction"]} for r in reasons]


def churn_body(r: dict) -> dict:
    return {"customer_id": r["customer_id"], "churn_probability": r["churn_probability"], "risk_level": r["risk_level"],
            "model": _model(r["model"]), "feature_sources": _sources(r["feature_sources"]),
            "reasons": public_reasons(r.get("reasons", [])), "principal_reasons": public_reasons(r.get("principal_reasons", [])),
            "feature_age_s": r.get("feature_age_s", {}), "stale_views": r.get("stale_views", [])}


def segment_body(r: dict) -> dict:
    return {"customer_id": r["customer_id"], "segment_id": r["segment_id"], "segment_name": r["segment_name"],
            "model": _model(r["model"]), "feature_sources": _sources(r["feature_sources"]),
            "feature_age_s": r.get("feature_age_s", {}), "stale_views": r.get("stale_views", [])}


def fraud_body(r: dict) -> dict:
    return {"customer_id": r["customer_id"], "fraud_probability": r["fraud_probability"], "outcome": r["outcome"],
            "is_fraud": r["is_fraud"], "threshold": r["threshold"], "block_threshold": r["block_threshold"],
            "rules": r["rules"], "model": _model(r["model"]), "feature_sources": _sources(r["feature_sources"]),
            "reasons": public_reasons(r["reasons"]), "principal_reasons": public_reasons(r.get("principal_reasons", [])),
            "feature_age_s": r.get("feature_age_s", {}), "stale_views": r.get("stale_views", [])}


@dataclass(frozen=True)
class Route:
    path: str  # under API_PREFIX
    family: str  # the family that answers it
    scope: str  # what a client's credential must hold (bentos/auth.py)
    handler: str  # "score" (one request, the fast path too), "batch" or "explain" (bentos/api.py: HANDLERS)
    name: str  # the handler's name in the OpenAPI document (its operation id and summary)
    body: type[BaseModel] | None = None  # the request's schema (a JSON body)
    response: type[BaseModel] | None = None
    request: Callable[[BaseModel, str | None, dict], dict] | None = None  # the family's request (handler "score")
    answer: Callable[[dict], dict] | None = None  # the response body of a result (handler "score")

    @property
    def url(self) -> str:
        return f"{API_PREFIX}/{self.path}"


# In the order the index and the OpenAPI document list them
ROUTES = (
    Route("churn-score", "churn", "inference", "score", "churn_score", CustomerRequest, ChurnScore, customer_request, churn_body),
    Route("churn-batch", "churn", "inference", "batch", "churn_batch", ChurnBatchRequest, ChurnBatchResponse),
    Route("segment", "segment", "inference", "score", "segment_customer", CustomerRequest, SegmentResult, customer_request,
          segment_body),
    Route("fraud-detection", "fraud", "inference", "score", "fraud_detection", FraudRequest, FraudScore, fraud_request,
          fraud_body),
    Route("explain", "churn", "explain", "explain", "explain"),
)
# every path that needs a scope, and the scope
PATH_SCOPES = {**{route.url: route.scope for route in ROUTES}, "/admin/reload": "admin", "/admin/whoami": "admin"}


def scope_of(path: str) -> str | None:
    """The scope a path needs; None: a valid credential alone (or an open path, bentos/auth.py).
    The protocol's infer paths name a model and a version, so they are matched by their shape."""
    if path in PATH_SCOPES:
        return PATH_SCOPES[path]
    if protocol_infer(path) is not None:
        return "inference"
    return None


def protocol_infer(path: str) -> tuple[str, str | None] | None:
    """The model and version a protocol infer path names (/v2/models/{name}[/versions/{v}]/infer), else None."""
    if not (path.startswith(f"{PROTOCOL_PREFIX}/models/") and path.endswith("/infer")):
        return None
    parts = path.removeprefix(f"{PROTOCOL_PREFIX}/models/").removesuffix("/infer").split("/")
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions":
        return parts[0], parts[2]
    return None
