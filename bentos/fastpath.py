"""The single-customer scoring routes (churn-score, segment, fraud-detection), and the Open
Inference Protocol's infer, answered before BentoML's router and FastAPI see the request.

    FintechAPI.add_asgi_middleware(FastPath, server=server)   # bentos/service.py, after authentication

A well-formed request (a JSON body that its pydantic schema accepts, a valid X-Request-ID and
X-Model-Version) is validated, scored and answered here, through the same functions the FastAPI
routes call: the same request to the family (bentos/routes.py: each route's `request`), the
same metrics and error translation (score_one), the same error responses. Anything else — another
route or method, another content type, a body too large, malformed or refused by its schema, a
header the routes would refuse — goes on, body and all, to BentoML's stack and the FastAPI app,
which answer it exactly as before: the fast path never decides what is invalid. Tests hold both
paths to the same status, body and headers (tests/unit/test_fastpath.py).

The protocol's infer (bentos/oip.py) is answered here whatever its body: its answers, errors
included, come from the same Protocol object the REST route asks, so both give the same status and
body. Only a body too large, a client that left, or an X-Request-ID the route would refuse go on.

It sits behind BentoML's timeout and tracing middlewares and behind Admission and Authenticate
(bentos/service.py), so shedding, authentication, rate limits, the 504 and tracing apply as before.

Why: on two cores, BentoML's router, its request context and FastAPI's routing, dependencies and
validation cost more per request than reading the features and scoring them: behind them,
churn-score answered about half of what a no-op route behind them did (docs/design/decisions/fast-path.md).
"""

from __future__ import annotations

import json
import logging
import re

from fastapi.responses import Response
from pydantic_core import to_json

from bentos.auth import Refused, refusal
from bentos.handling import (
    PIN_MAX_LENGTH,
    REQUEST_ID_MAX_LENGTH,
    REQUEST_ID_PATTERN,
    ClientError,
    ScoringFailed,
    caller_of,
    client_error_response,
    retry_after,
    score_one,
    scoring_failed_response,
)
from bentos.oip import BINARY_HEADER, Protocol, ProtocolError, infer_body, protocol_error_response
from bentos.routes import ROUTES, Route, protocol_infer

log = logging.getLogger(__name__)
REQUEST_ID = re.compile(REQUEST_ID_PATTERN.removeprefix("^").removesuffix("$"))  # matched whole, as pydantic does


class FastPath:
    """ASGI middleware answering the served families' single-customer routes; see the module."""

    def __init__(self, app, server):
        self.app, self.server = app, server
        self.routes = {r.url: r for r in ROUTES if r.handler == "score" and r.family in server.serving.served()}
        self.max_body_bytes = server.serving.max_body_bytes
        self.retry_after_s = retry_after(server.serving)
        self.protocol = Protocol(server)

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None and scope["type"] == "http" and scope["method"] == "POST" and (
                named := protocol_infer(scope["path"])) is not None and named[0] in self.protocol.models:
            return await self.infer(scope, receive, send, *named)
        headers = route and plain_headers(scope["headers"], self.max_body_bytes)
        if headers is None:
            return await self.app(scope, receive, send)
        messages, body = await read_body(receive, self.max_body_bytes)
        request = body and parse(route, body, headers.get(b"x-model-version"), headers.get(b"x-request-id"), scope)
        if not request:
            return await self.app(scope, replay(messages, receive), send)
        try:
            result = await score_one(self.server, route.path, route.family, request)
        except ClientError as e:
            return await client_error_response(e)(scope, receive, send)
        except ScoringFailed as e:
            return await scoring_failed_response(e, self.retry_after_s)(scope, receive, send)
        content = to_json(route.answer(result))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", b"%d" % len(content)), (b"content-type", b"application/json"),
            (b"x-request-id", request["request_id"].encode())]})
        await send({"type": "http.response.body", "body": content})

    async def infer(self, scope, receive, send, name: str, version: str | None):
        """The protocol's infer, as the REST route answers it (bentos/oip.py)."""
        headers: dict[bytes, bytes] = {}
        for header, value in scope["headers"]:
            headers.setdefault(header, value)
        length, request_id = headers.get(b"content-length"), headers.get(b"x-request-id")
        if length is not None and not (length.isdigit() and int(length) <= self.max_body_bytes) or request_id is not None and not (
                len(request_id) <= REQUEST_ID_MAX_LENGTH and REQUEST_ID.fullmatch(request_id.decode("latin-1"))):
            return await self.app(scope, receive, send)
        messages, body = await read_body(receive, self.max_body_bytes)
        if body is None:
            return await self.app(scope, replay(messages, receive), send)
        who = caller_of(scope, latin1(request_id))
        try:
            payload = infer_body(body, latin1(headers.get(BINARY_HEADER.encode())))
            content = await self.protocol.infer_content(f"v2/models/{name}/infer", name, version, payload, who,
                                                        scope.get("state", {}).get("charge_rows"))  # none with AUTH_MODE=off
        except ProtocolError as e:
            return await protocol_error_response(e)(scope, receive, send)
        except Refused as e:  # over the client's rows limit
            content, refused_headers = refusal(e)
            return await Response(content, e.status, refused_headers, "application/json")(scope, receive, send)
        except ScoringFailed as e:
            return await scoring_failed_response(e, self.retry_after_s)(scope, receive, send)
        except Exception:  # a fault of ours in reading the request: answer it, or BentoML's timeout waits 10 s for nothing
            log.exception("v2/models/%s/infer: the request could not be read", name)
            failed = ScoringFailed("the request could not be scored; the service's log has the cause")
            return await scoring_failed_response(failed, self.retry_after_s)(scope, receive, send)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", b"%d" % len(content)), (b"content-type", b"application/json"),
            (b"x-request-id", who["request_id"].encode())]})
        await send({"type": "http.response.body", "body": content})


def plain_headers(raw: list[tuple[bytes, bytes]], max_body_bytes: int) -> dict[bytes, bytes] | None:
    """The headers the routes read (the first of each, as Starlette takes it), when they are ones
    the FastAPI route would accept as they are; None to leave the request to it."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        headers.setdefault(name, value)
    if headers.get(b"content-type", b"").partition(b";")[0].strip().lower() != b"application/json":
        return None
    length = headers.get(b"content-length")
    if length is not None and not (length.isdigit() and int(length) <= max_body_bytes):
        return None
    pin, request_id = headers.get(b"x-model-version"), headers.get(b"x-request-id")
    if pin is not None and len(pin) > PIN_MAX_LENGTH:
        return None
    if request_id is not None and not (len(request_id) <= REQUEST_ID_MAX_LENGTH and REQUEST_ID.fullmatch(request_id.decode("latin-1"))):
        return None
    return headers


async def read_body(receive, limit: int) -> tuple[list[dict], bytes | None]:
    """The messages received, and the whole body; no body when it grew past `limit` or the
    client left (the FastAPI app then answers from the same messages)."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if size > limit:
            return messages, None
        if not message.get("more_body", False):
            break
    return messages, b"".join(m.get("body", b"") for m in messages)


def parse(route: Route, body: bytes, pin: bytes | None, request_id: bytes | None, scope: dict) -> dict | None:
    """The family's request, or None when the body is not one the route's schema accepts."""
    try:
        validated = route.body.model_validate(json.loads(body))  # as FastAPI decodes and validates a JSON body
    except (ValueError, RecursionError):  # pydantic's ValidationError is a ValueError, as is JSON's decode error
        return None
    return route.request(validated, latin1(pin), caller_of(scope, latin1(request_id)))


def latin1(value: bytes | None) -> str | None:
    """A header's value as Starlette decodes it."""
    return None if value is None else value.decode("latin-1")


def replay(messages: list[dict], receive):
    """`receive` that hands out `messages` again first."""
    pending = list(messages)

    async def again() -> dict:
        return pending.pop(0) if pending else await receive()

    return again
