"""The public HTTP API: the JSON routes, from the route table, and the service's own routes
(health, readiness, status, reload, metrics); the Open Inference Protocol's (bentos/oip.py) beside them.

    app = create_app(server, auth_mode="on")   # server: the families this process serves (bentos/family.py)

Each scoring route validates its body (pydantic, bentos/schemas.py) and hands the request to its
family in this process, which batches it with the requests arriving at the same time
(bentos/batching.py) and scores it. Only the routes of the families the server holds exist; the
others answer 404. Every client error is a JSON 4xx naming the field; nothing a client sends
produces a 500. In the service, churn-score, segment and fraud-detection are answered before this
app by bentos/fastpath.py, through the same functions (bentos/handling.py), whenever a request is
clean; this app answers the rest of them, and every other route.
"""

from __future__ import annotations

from http import HTTPStatus

import anyio.to_thread
from fastapi import APIRouter, Body, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from bentos.auth import OFF_WARNING, OPEN, Refused, refusal
from bentos.config import API_PREFIX
from bentos.handling import (
    Caller,
    ClientError,
    Pin,
    ScoringFailed,
    answered_by,
    client_error_response,
    observed,
    raise_for,
    retry_after,
    score_one,
    scoring_failed_response,
)
from bentos.metrics import exposition, summary
from bentos.oip import ProtocolError, protocol_error_response, protocol_router
from bentos.routes import ROUTES, Route, scope_of
from bentos.schemas import ChurnBatchRequest, CustomerId, ErrorResponse, ReloadRequest
from core import audit
from core.settings import get_settings
from scoring.base import UNKNOWN_CUSTOMER, UNKNOWN_VERSION

ERRORS = {404: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit:,} bytes, the limit")


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is refused with 413 before it is read whole, at
    once when its Content-Length says so, or as soon as a chunked body passes the limit. (Raised
    while the route reads its body, an HTTPException reaches the app's handler untouched.)"""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return await _framework_error(BodyTooLarge(self.limit))(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


def _unreadable_body(cause: BaseException | None) -> str:
    """Why FastAPI could not parse a body that is not malformed JSON as such."""
    if isinstance(cause, UnicodeDecodeError):
        return "is not valid UTF-8, which JSON must be"
    if isinstance(cause, RecursionError):
        return "nests arrays or objects too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "holds a number with too many digits"
    return "cannot be read as JSON"


def _framework_error(e: HTTPException) -> JSONResponse:
    """The framework's own refusals (no route, wrong method, a body it cannot parse or that is too
    large) in the service's error body. FastAPI answers a body it cannot decode with a bare 400;
    it is a 422 naming the body, like malformed JSON."""
    if e.status_code == 400 and e.__cause__ is not None:
        problem = _unreadable_body(e.__cause__)
        return JSONResponse({"error": "invalid_request", "detail": f"the request body {problem}",
                             "fields": [{"field": "body", "message": problem}]}, status_code=422)
    if isinstance(e, BodyTooLarge):
        error, fields = "body_too_large", [{"field": "body", "message": "too large"}]
    else:
        error, fields = HTTPStatus(e.status_code).phrase.lower().replace(" ", "_"), []
    return JSONResponse({"error": error, "detail": str(e.detail), "fields": fields}, status_code=e.status_code,
                        headers=e.headers)


def _field(error: dict) -> str:
    if error["type"] == "json_invalid":  # its location is a character offset, not a field
        return "body"
    return ".".join(str(part) for part in error["loc"] if part != "body") or "body"


def create_app(server, auth_mode: str = "on") -> FastAPI:
    """The FastAPI app of `server`: the service routes, and the scoring routes of its families.
    `auth_mode` is what bentos/auth.py enforces in front of it; off, /models/status says so."""
    app = FastAPI(
        title="fintech-serving",
        description="Churn (with reason codes), fraud and segmentation models, scored from Feast online features.",
        version="1.0",
    )
    _add_error_handlers(app, retry_after_s=retry_after(server.serving))
    app.add_middleware(BodyLimit, limit=server.serving.max_body_bytes)
    app.include_router(_service_routes(server, auth_mode))
    families = server.serving.served()
    scoring = APIRouter(prefix=API_PREFIX)
    for route in ROUTES:
        if route.family in families:
            HANDLERS[route.handler](scoring, server, route)

    @scoring.get("/metrics")
    async def metrics_summary() -> dict:
        return summary()

    app.include_router(scoring)
    app.include_router(protocol_router(server))
    _describe_credentials(app)
    return app


def _describe_credentials(app: FastAPI) -> None:
    """The OpenAPI document names the credentials bentos/auth.py accepts, on every route that needs one."""
    make_document = app.openapi

    def document() -> dict:
        if app.openapi_schema is None:
            schema = make_document()
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "An access token from the OpenID provider AUTH_ISSUER names."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "A key made by `python -m core.api_keys new`."}}
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
            refusals = {status: {"description": reason, "content": error} for status, reason in (
                ("401", "No valid credential; WWW-Authenticate says why (RFC 6750)"),
                ("403", "The credential lacks the route's scope"),
                ("429", ("The client is over its rate limit (across the replicas when the online store is Redis; "
                         "per replica otherwise, or while Redis does not answer); Retry-After says when to retry")))}
            for path, operations in schema["paths"].items():
                if path in OPEN:
                    continue
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
                    operation["responses"].update(refusals)
                    if needed := scope_of(path):
                        operation["description"] = (operation.get("description", "") +
                                                    f"\n\nNeeds the scope `{needed}`.").strip()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document


def _add_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(ClientError)
    async def client_error(_: Request, e: ClientError) -> JSONResponse:
        return client_error_response(e)

    @app.exception_handler(ProtocolError)  # the Open Inference Protocol's own error body
    async def protocol_error(_: Request, e: ProtocolError) -> JSONResponse:
        return protocol_error_response(e)

    @app.exception_handler(HTTPException)
    async def framework_error(_: Request, e: HTTPException) -> JSONResponse:
        return _framework_error(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        fields = [{"field": _field(err), "message": err["msg"]} for err in e.errors()]
        return JSONResponse({"error": "invalid_request", "detail": "the request body does not match the schema",
                             "fields": fields}, status_code=422)

    @app.exception_handler(ScoringFailed)
    async def scoring_failed(_: Request, e: ScoringFailed) -> JSONResponse:
        return scoring_failed_response(e, retry_after_s)

    @app.exception_handler(Refused)
    async def refused(_: Request, e: Refused) -> Response:  # a route's own charge: churn-batch's rows
        body, headers = refusal(e)
        return Response(body, status_code=e.status, headers=headers, media_type="application/json")


def for_caller(status: dict, request: Request, auth_mode: str) -> dict:
    """The families' status as this caller may read it: the error texts (paths, addresses, table
    names) only for `admin` (everyone, with AUTH_MODE=off: no scope is checked); for anyone else a
    code in their place."""
    client = request.scope.get("state", {}).get("client")
    if auth_mode == "off" or (client is not None and "admin" in client.scopes):
        return status
    public = {}
    for name, family in status.items():
        family = dict(family)
        if family.get("registry_error"):
            family["registry_error"] = "unavailable"
        if family.get("refused_versions"):
            family["refused_versions"] = dict.fromkeys(family["refused_versions"], "refused")
        if (family.get("inference_log") or {}).get("write_error"):
            family["inference_log"] = {**family["inference_log"], "write_error": "write_failed"}
        if family.get("rate_limits"):
            limits = family["rate_limits"]
            family["rate_limits"] = {**limits, "shared": "per pod" if limits["shared"] == "per pod" else "redis",
                                     "error": limits["error"] and "unavailable"}
        public[name] = family
    return public


def _service_routes(server, auth_mode: str) -> APIRouter:
    router = APIRouter()
    audit_log = get_settings().audit_log

    @router.get("/")
    async def info(request: Request) -> dict:
        routes = [route.path for route in ROUTES if route.family in server.serving.served()]
        return {"service": "fintech-serving", "docs": "/docs", "openapi": "/openapi.json",
                "routes": [f"{API_PREFIX}/{r}" for r in (*routes, "metrics")], "models": for_caller(server.status(), request, auth_mode)}

    @router.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @router.get("/ready")
    async def ready() -> JSONResponse:
        """Ready once every family's models are loaded and the feature store answers."""
        checks = await anyio.to_thread.run_sync(server.readiness)
        ok = all(checks[f] for f in server.families)
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @router.get("/models/status")
    async def models_status(request: Request) -> dict:
        """Per family; with AUTH_MODE=off, each family's `warnings` says the routes are open. Each
        family's `rate_limits` says where the buckets are: shared through Redis, or per pod (by the
        settings, or since `since`, when Redis stopped answering). The registry's, the inference
        log's and Redis's errors, Redis's address, and why a version was refused, in words for a
        caller with the `admin` scope; as a code for the others."""
        status = server.status()
        limits = request.scope.get("state", {}).get("rate_limits")
        if limits is not None:  # none with AUTH_MODE=off: no client is held to a limit
            for family in status.values():
                family["rate_limits"] = limits.status()
        status = for_caller(status, request, auth_mode)
        if auth_mode == "off":
            for family in status.values():
                family["warnings"] = [OFF_WARNING]
        return status

    @router.get("/admin/whoami")
    async def whoami(request: Request) -> dict:
        """The client the service takes the caller for (the rollout CLI asks before it changes anything)."""
        client = request.scope.get("state", {}).get("client")
        if client is None:
            return {"client_id": "", "via": "none", "scopes": [], "auth_mode": auth_mode}
        return {"client_id": client.client_id, "via": client.via, "scopes": sorted(client.scopes), "auth_mode": auth_mode}

    @router.post("/admin/reload", responses={422: {"model": ErrorResponse}})
    async def reload(request: Request, body: ReloadRequest | None = Body(None)) -> dict:
        """Follow the registry now (the families also poll it). Each family loads any new
        version beside the live one and swaps it in without failing a request in flight.
        Written to the audit log with who asked and what changed."""
        answer = await anyio.to_thread.run_sync(server.reload)
        client = request.scope.get("state", {}).get("client")
        await anyio.to_thread.run_sync(lambda: audit.append(
            audit_log, action="reload", actor=client.client_id if client else "anonymous (AUTH_MODE=off)",
            via=client.via if client else "none", verified=client is not None, source="service", details={"reason": body.reason if body else "", "answer": answer}))
        return answer

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """The service's metrics, summed over the worker processes (Prometheus text format)."""
        body, content_type = await anyio.to_thread.run_sync(exposition)
        return Response(body, media_type=content_type)

    return router


def _score_route(router: APIRouter, server, route: Route) -> None:
    """One request scored by the route's family (the fast path answers the clean ones first)."""

    async def score(body, who, pin=Pin) -> dict:
        return await score_one(server, route.path, route.family, route.request(body, pin, who))

    score.__annotations__ = {"body": route.body, "who": Caller, "pin": str | None, "return": dict}
    router.add_api_route(f"/{route.path}", score, methods=["POST"], name=route.name, response_model=route.response,
                         responses=ERRORS)


def _batch_route(router: APIRouter, server, route: Route) -> None:
    max_ids = server.serving.max_batch_ids

    @router.post(f"/{route.path}", response_model=route.response, responses=ERRORS)
    async def churn_batch(request: Request, body: ChurnBatchRequest, who: Caller, pin: str | None = Pin) -> dict:
        """Up to 10,000 customers' churn scores in one call. Rate limits: one request of the client's
        `inference` limit, and one row per id of its `rows` limit (default 10,000 rows/s, burst 20,000;
        AUTH_DEFAULT_LIMITS, AUTH_RATE_LIMITS): a batch that does not fit is a 429 and takes nothing.
        The limits hold across the replicas when the online store is Redis (they share the buckets
        there); per replica otherwise, or while Redis does not answer."""
        with observed(route.path, route.family) as labels:
            if len(body.customer_ids) > max_ids:
                raise ClientError(413, "too_many_ids", f"at most {max_ids:,} customer ids per call, "
                                  f"got {len(body.customer_ids):,}", [{"field": "customer_ids", "message": "too many"}])
            charge = request.scope.get("state", {}).get("charge_rows")
            if charge is not None:  # none with AUTH_MODE=off: no client to hold to a limit
                charge(len(body.customer_ids))
            requests = [{"customer_id": c, "pin": pin, **who} for c in body.customer_ids]
            # a large batch is scored in a thread, so the event loop keeps answering the other routes
            results = await anyio.to_thread.run_sync(lambda: server.families[route.family].score_batch(requests, reasons=False))
            for result in results:
                if result.get("error") == UNKNOWN_VERSION:
                    raise_for(result)
            models = sorted({r["model"]["version"]: r["model"] for r in results if "error" not in r}.values(),
                            key=lambda m: m["role"])
            labels.update(answered_by({"model": models[0]} if models else {}))
            items = [{"customer_id": r["customer_id"], "churn_probability": r.get("churn_probability"),
                      "risk_level": r.get("risk_level"), "version": None if "error" in r else r["model"]["version"],
                      "error": r.get("error"), "stale_views": r.get("stale_views", [])}
                     for r in results]
            return {"models": models, "count": len(items),
                    "unknown": sum(1 for r in results if r.get("error") == UNKNOWN_CUSTOMER), "results": items}


def _explain_route(router: APIRouter, server, route: Route) -> None:
    @router.get(f"/{route.path}", responses=ERRORS)
    async def explain(request: Request, customer_id: CustomerId | None = Query(None, description="Omit for global importance."),
                      pin: str | None = Pin) -> dict:
        """A customer's SHAP values with their feature values (or, without a customer, the model's
        global importance). Each call about a customer is recorded: who, which customer, which
        version, when (DATA_DIR/audit/explain.jsonl)."""
        with observed(route.path, route.family) as labels:
            churn = server.families[route.family]
            if customer_id is None:
                scorer = churn.pick("", pin or "champion")
                result = scorer if isinstance(scorer, dict) else {
                    "model": scorer.info.as_dict(), "kind": "global_importance", "mean_abs_shap": scorer.importance}
            else:
                scorer = churn.pick(customer_id, pin)
                # exact SHAP values take milliseconds: off the event loop
                result = scorer if isinstance(scorer, dict) else await anyio.to_thread.run_sync(scorer.explain, customer_id)
                if "error" not in result:
                    await anyio.to_thread.run_sync(record_explain, request, customer_id, result["model"]["version"])
            labels.update(answered_by(result))
            return raise_for(result)


def record_explain(request: Request, customer_id: str, version: str) -> None:
    client = request.scope.get("state", {}).get("client")
    audit.append(get_settings().explain_log, action="explain", actor=client.client_id if client else "anonymous (AUTH_MODE=off)",
                 via=client.via if client else "none", verified=client is not None, source="service", family="churn",
                 details={"customer_id": customer_id, "version": version})


HANDLERS = {"score": _score_route, "batch": _batch_route, "explain": _explain_route}  # bentos/routes.py: Route.handler
