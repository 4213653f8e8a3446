"""The Open Inference Protocol (v2), beside the JSON routes: what KServe's, Triton's and MLServer's
clients and gateways speak. Each family this process serves is a model of that name; its versions
are the registry versions it serves. `Protocol` answers; the REST routes below, the fast path
(bentos/fastpath.py, for infer) and the gRPC service (bentos/oip_grpc.py) carry its answers.

    GET  /v2/health/live   /v2/health/ready           the server (open, like /health)
    GET  /v2                                          the server's metadata
    GET  /v2/models/{name}[/versions/{v}]             a model's metadata: its input and output tensors
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer       score a batch of rows (scope `inference`)

The tensors are read off the JSON routes' own models (bentos/routes.py), so the two cannot differ:
an infer request names its customers in `customer_id` (BYTES, [N]), and fraud adds each field of
the transaction as a tensor of its own ([N]). Each row becomes the request the JSON route makes of
its body, validated by the same schema and handed to the same family: batched with the other
requests, split between champion and challenger, counted in the same metrics and written to the
inference log. A version in the path pins it, as X-Model-Version does.

A request may also carry `features` (numeric, [N, F]): each row's whole feature vector, in the
order the model's metadata gives (`parameters.feature_names` of that input), scored as given
instead of read from the store, so a customer the store does not know yet (a prospect) is scored
too. The order is a version's: the model's metadata gives the champion's, a version's metadata
its own. When a canary's two versions read different features, an unversioned request with
`features` is scored by the champion (its order is the one the client was given); to reach the
challenger, name its version. Fraud rows still carry their transaction, which the inference log keeps.

The outputs are the fields of the JSON answer, one tensor each ([N]), then `model_version` and
`model_role` (BYTES), `reasons`, `principal_reasons`, (fraud) `rules`, `feature_age_s` and
`stale_views` (BYTES: each row's list or object as the JSON answer gives it, as JSON text) when the
family gives them, and `error` (BYTES): a row that could not be scored (a customer the store does not know) has
its code there and null (NaN in raw gRPC tensors), false, 0 or "" in the others, and the other rows
are answered. A fault of the request itself is {"error": "<message>"}, as the protocol has it: 400
for a malformed body or tensor (naming the input), 404 for a model this process does not serve or a
version it does not. Tensors may come as JSON or in the binary tensor extension (`infer_body`);
answers are JSON.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import types
import typing
from collections.abc import Callable
from operator import itemgetter

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from bentos.handling import Caller, ClientError, answered_by, observed
from bentos.routes import PROTOCOL_PREFIX as PREFIX
from bentos.routes import ROUTES, Route, public_reasons
from bentos.schemas import ErrorResponse
from core.families import FAMILIES
from core.registry import CHAMPION
from scoring.base import UNKNOWN_VERSION

ID_INPUT = "customer_id"
FEATURES_INPUT = "features"  # a row's whole feature vector, scored as given
NOT_OUTPUTS = frozenset({"customer_id", "model", "feature_sources", "reasons", "principal_reasons", "rules", "feature_age_s",
                         "stale_views"})  # carried otherwise, or not at all
NUMERIC = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
REASONS = ("reasons", "principal_reasons")  # outputs of JSON text, each row's list of reasons
LISTS = (*REASONS, "rules", "feature_age_s", "stale_views")  # every output of JSON text: rule hits, ages, stale views
EMPTY = {"FP64": None, "BOOL": False, "INT64": 0, "BYTES": ""}  # what a row that was not scored holds (None: JSON's null, NaN raw)
BINARY_HEADER = "inference-header-content-length"  # the binary tensor extension: the JSON part's length
# each numeric datatype's little-endian layout in raw tensor bytes
RAW = {"BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1", "UINT16": "<u2",
       "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
LENGTH = struct.Struct("<I")  # a raw BYTES element: its length, then its bytes
SERVER_METADATA = {"name": "fintech-serving", "version": "1.0", "extensions": []}


TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string", "enum": ["BYTES", "BOOL", *sorted(NUMERIC)]}, "parameters": {"type": "object"},
    "data": {"type": "array"}}}
# what the app answers a request whose X-Request-ID (or other parameter) is invalid: bentos/api.py's error body
INVALID = {422: {"model": ErrorResponse}}
ERROR = {"application/json": {"schema": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}
# The infer body is read as the protocol has it (errors in its shape), so its schema is written here
INFER_DOCUMENT = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": TENSOR, "minItems": 1},
            "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}}}},
    "responses": {"400": {"description": "A malformed body or tensor (the message names the input)", "content": ERROR},
                  "404": {"description": "A model or version this process does not serve", "content": ERROR}},
}


class ProtocolError(ClientError):
    """The request breaks the protocol or names what is not served: {"error": message} with `status`
    (a client error, counted as one)."""

    def __init__(self, status: int, message: str):
        super().__init__(status, "protocol_error", message)


def datatype(annotation) -> str:
    """A response or request field's tensor datatype."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is bool:
        return "BOOL"
    if annotation is int:
        return "INT64"
    if annotation is float or typing.get_origin(annotation) is typing.Annotated and typing.get_args(annotation)[0] is float:
        return "FP64"
    return "BYTES"  # str, a Literal of str, a datetime (ISO 8601 text)


class Model:
    """One family as the protocol sees it: its scoring route's request and answer, as tensors."""

    def __init__(self, route: Route):
        self.route, self.name = route, route.family
        body = route.body.model_fields
        # the id, then each field of a nested model (fraud's transaction) as a tensor of its own
        self.nested = {name: f.annotation for name, f in body.items() if isinstance(f.annotation, type)
                       and issubclass(f.annotation, BaseModel)}
        self.inputs = {ID_INPUT: ("BYTES", True)} | {
            field: (datatype(f.annotation), f.is_required())
            for model in self.nested.values() for field, f in model.model_fields.items()}
        self.outputs = {name: datatype(f.annotation) for name, f in route.response.model_fields.items()
                        if name not in NOT_OUTPUTS}
        self.outputs |= {"model_version": "BYTES", "model_role": "BYTES"}
        self.outputs |= {name: "BYTES" for name in LISTS if name in route.response.model_fields}
        self.outputs["error"] = "BYTES"  # last: answer() relies on it
        # how each output is read off a scored row's result
        special = {"model_version": lambda r: r["model"]["version"], "model_role": lambda r: r["model"]["role"],
                   "error": lambda r: "", **{name: reasons_text(name) for name in REASONS},
                   "rules": lambda r: to_json(r.get("rules", [])).decode(),
                   "feature_age_s": lambda r: to_json(r.get("feature_age_s", {})).decode(),
                   "stale_views": lambda r: to_json(r.get("stale_views", [])).decode()}
        self.getters = [special.get(name) or itemgetter(name) for name in self.outputs]
        self.read = list(zip(self.outputs, self.outputs.values(), self.getters))  # name, datatype, getter
        # each output tensor of one row, up to its value (one_row)
        self.encoded = [b'{"name":%s,"datatype":"%s","shape":[1],"data":[' % (to_json(name), kind.encode())
                        for name, kind in self.outputs.items()]

    def metadata(self, versions: list[str], feature_names: list[str]) -> dict:
        """`feature_names`: the order of the `features` input, the version's the metadata describes."""
        inputs = [{"name": name, "datatype": kind, "shape": [-1], "parameters": {"optional": not required}}
                  for name, (kind, required) in self.inputs.items()]
        inputs.append({"name": FEATURES_INPUT, "datatype": "FP32", "shape": [-1, len(feature_names)],
                       "parameters": {"optional": True, "feature_names": feature_names}})
        return {"name": self.name, "versions": versions, "platform": f"fintech-serving_{FAMILIES[self.name].flavour}",
                "inputs": inputs, "outputs": [{"name": name, "datatype": kind, "shape": [-1]} for name, kind in self.outputs.items()]}

    def rows(self, inputs: list, order: Callable[[], list[str]]) -> tuple[list[dict], list[dict] | None]:
        """The JSON body of each row, from the request's tensors, and each row's feature vector when
        the request carries `features` (by name, in the order `order()` gives); 400 naming a tensor
        that is wrong."""
        if not isinstance(inputs, list) or not inputs:
            raise ProtocolError(400, "the request needs `inputs`, a list of tensors")
        if not self.nested and len(inputs) == 1 and (one := lone_id(inputs[0])) is not None:
            return [{ID_INPUT: one}], None  # one customer_id, the commonest request: what the loop below makes of it
        tensors, vectors = {}, None
        for tensor in inputs:
            name = tensor.get("name") if isinstance(tensor, dict) else None
            if not isinstance(name, str):
                raise ProtocolError(400, f"each input must be an object with a `name`; got {str(tensor)[:100]}")
            if name == FEATURES_INPUT:
                feature_names = order()
                vectors = [dict(zip(feature_names, row)) for row in matrix(tensor, len(feature_names))]
                continue
            if name not in self.inputs:
                raise ProtocolError(400, f"input {name!r} is not an input of model {self.name!r}; its inputs: "
                                    f"{', '.join([*self.inputs, FEATURES_INPUT])}")
            tensors[name] = flat(tensor, self.inputs[name][0])
        missing = [name for name, (_, required) in self.inputs.items() if required and name not in tensors]
        if missing:
            raise ProtocolError(400, f"model {self.name!r} needs the input(s) {', '.join(missing)}")
        n = len(tensors[ID_INPUT])
        if unequal := [name for name, values in tensors.items() if len(values) != n] + (
                [FEATURES_INPUT] if vectors is not None and len(vectors) != n else []):
            raise ProtocolError(400, f"input(s) {', '.join(unequal)} do not have the {n} rows {ID_INPUT} has")
        nested = next(iter(self.nested), None)
        bodies = []
        for i in range(n):
            body = {ID_INPUT: tensors[ID_INPUT][i]}
            if nested:
                body[nested] = {name: values[i] for name, values in tensors.items() if name != ID_INPUT}
            bodies.append(body)
        return bodies, vectors

    def validated(self, bodies: list[dict]) -> list[BaseModel]:
        checked = []
        for i, body in enumerate(bodies):
            try:
                checked.append(self.route.body.model_validate(body))
            except ValidationError as e:
                error = e.errors()[0]
                raise ProtocolError(400, f"input {error['loc'][-1]!r}, row {i}: {error['msg']}") from e
        return checked

    def check_outputs(self, asked) -> None:
        """400 unless `asked` (a request's `outputs`) is a list of objects naming outputs of this model."""
        if not isinstance(asked, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked):
            raise ProtocolError(400, "`outputs` must be a list of objects with a `name`")
        if unknown := [o["name"] for o in asked if o["name"] not in self.outputs]:
            raise ProtocolError(400, f"output(s) {', '.join(map(repr, unknown))} are not outputs of model {self.name!r}; "
                                f"its outputs: {', '.join(self.outputs)}")

    def answer(self, results: list[dict], asked: list[dict] | None = None) -> list[dict]:
        """The output tensors of the rows' results, in the REST form ({name, datatype, shape, data}):
        every output, or those `asked` names (a request's `outputs`, checked), in its order."""
        columns = [[] for _ in self.outputs]
        empty = [EMPTY[kind] for kind in self.outputs.values()]
        for r in results:
            if "error" in r:  # not scored: empty values, and the code in `error`
                for column, value in zip(columns, empty):
                    column.append(value)
                columns[-1][-1] = r["error"]
            else:
                for column, get in zip(columns, self.getters):
                    column.append(get(r))
        tensors = {name: {"name": name, "datatype": kind, "shape": [len(results)], "data": column}
                   for (name, kind), column in zip(self.outputs.items(), columns)}
        return list(tensors.values()) if asked is None else [tensors[o["name"]] for o in asked]

    def one_row(self, head: dict, result: dict) -> bytes:
        """The JSON of the answer to one scored row with every output: to_json of {**head, "outputs":
        self.answer([result])}, byte for byte (tests/unit/test_oip.py holds them equal)."""
        parts = [to_json(head)[:-1], b',"outputs":[']
        for prefix, (_, _, get) in zip(self.encoded, self.read):
            parts += (prefix, to_json(get(result)), b"]},")
        parts[-1] = b"]}]}"
        return b"".join(parts)


def lone_id(tensor) -> str | None:
    """The id of a tensor that is exactly one customer_id (BYTES, shape [1], one string), else None."""
    shape = tensor.get("shape") if isinstance(tensor, dict) else None
    if isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] == 1 and \
            tensor.get("name") == ID_INPUT and tensor.get("datatype") == "BYTES":
        data = tensor.get("data")
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], str):
            return data[0]
    return None


def reasons_text(name: str) -> Callable[[dict], str]:
    """What reads a row's reasons (`name`: reasons or principal_reasons) as the JSON text of its output."""
    return lambda result: to_json(public_reasons(result.get(name, []))).decode()


def flat(tensor: dict, kind: str) -> list:
    """A tensor's data as a flat list of its rows, checked against its shape and the input's datatype."""
    name, shape, given, data = tensor["name"], tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not isinstance(shape, list) or len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 0:
        raise ProtocolError(400, f"input {name!r}: shape must be [N], one value per row; got {shape!r}")
    if kind == "BYTES" and given != "BYTES" or kind != "BYTES" and not (isinstance(given, str) and given in NUMERIC):
        raise ProtocolError(400, f"input {name!r}: datatype must be {'BYTES' if kind == 'BYTES' else 'numeric'}, got {given!r}")
    data = flattened(data)
    if not isinstance(data, list) or len(data) != shape[0]:
        raise ProtocolError(400, f"input {name!r}: data must hold {shape[0]} values (its shape), got "
                            f"{len(data) if isinstance(data, list) else type(data).__name__}")
    if kind == "BYTES" and not all(isinstance(x, str) for x in data):
        raise ProtocolError(400, f"input {name!r}: BYTES data must be strings")
    if kind != "BYTES" and not all(finite(x) for x in data):
        raise ProtocolError(400, f"input {name!r}: {given} data must be finite numbers")
    return data


def flattened(data):
    """Row-major nesting is allowed: [[a, b], [c, d]] is [a, b, c, d]. Data nested unevenly stays
    nested, and the checks of its values refuse it."""
    while isinstance(data, list) and data and all(isinstance(row, list) for row in data):
        data = [x for row in data for x in row]
    return data


def finite(x) -> bool:
    """A number, not a boolean, and finite as a float (an integer too large for one is not)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def matrix(tensor: dict, width: int) -> list[list[float]]:
    """The `features` tensor's rows: shape [N, width], numbers, all finite."""
    shape, given, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not isinstance(shape, list) or len(shape) != 2 or shape[1:] != [width] or not isinstance(shape[0], int) or shape[0] < 0:
        raise ProtocolError(400, f"input {FEATURES_INPUT!r}: shape must be [N, {width}] (the model's {width} features, "
                            f"in the order its metadata gives); got {shape!r}")
    if not (isinstance(given, str) and given in NUMERIC):
        raise ProtocolError(400, f"input {FEATURES_INPUT!r}: datatype must be numeric, got {given!r}")
    data = flattened(data)
    if not isinstance(data, list) or len(data) != shape[0] * width:
        raise ProtocolError(400, f"input {FEATURES_INPUT!r}: data must hold {shape[0] * width} values (its shape), got "
                            f"{len(data) if isinstance(data, list) else type(data).__name__}")
    if not all(finite(x) for x in data):
        raise ProtocolError(400, f"input {FEATURES_INPUT!r}: {given} data must be finite numbers")
    return [[float(x) for x in data[i:i + width]] for i in range(0, len(data), width)]


class Protocol:
    """What the protocol answers, whichever transport carries it: the REST routes below and the gRPC
    service (bentos/oip_grpc.py) both ask this."""

    def __init__(self, server):
        self.server = server
        self.models = {route.family: Model(route) for route in ROUTES
                       if route.handler == "score" and route.family in server.serving.served()}
        self.max_rows = server.serving.max_batch_ids
        self._layouts: dict[str, tuple] = {}  # family -> (its live set, each version's feature order)

    def model_of(self, name: str, version: str | None) -> tuple[Model, dict[str, list[str]]]:
        """The model, and the feature order of each version the request may reach (the champion's first)."""
        if name not in self.models:
            raise ProtocolError(404, f"model {name!r} is not served here; served: {', '.join(self.models) or 'none'}")
        live = self.server.families[name].versions.live
        cached = self._layouts.get(name)
        if cached is None or cached[0] is not live:  # built once per live set: it changes only when the registry does
            cached = self._layouts[name] = (live, {scorer.info.version: scorer.features for scorer in live.scorers.values()})
        layouts = cached[1]  # the champion first (bentos/versions.py)
        if version is not None and version not in layouts:
            raise ProtocolError(404, f"model {name!r} has no version {version!r} served here; served: {', '.join(layouts)}")
        return self.models[name], {version: layouts[version]} if version else layouts

    def ready(self) -> bool:
        return all(family.ready() for family in self.server.families.values())

    def metadata(self, name: str, version: str | None) -> dict:
        model, layouts = self.model_of(name, version)
        return model.metadata(list(layouts), next(iter(layouts.values())))

    async def infer(self, route: str, name: str, version: str | None, body: dict, who: dict, charge) -> dict:
        """Score the rows of an infer request (`body`: its `inputs` as JSON tensors, its `id`, and the
        `outputs` it asks for, if it names them), counted in the request metrics under `route`.
        `charge(rows)` takes the rows from the client's `rows` limit (None with AUTH_MODE=off). The
        answer is the REST body."""
        model, results, head = await self.scored(route, name, version, body, who, charge)
        return {**head, "outputs": model.answer(results, body.get("outputs"))}

    async def infer_content(self, route: str, name: str, version: str | None, body: dict, who: dict, charge) -> bytes:
        """`infer`'s answer as the JSON the fast path sends. One scored row with every output (the
        commonest answer) is written around the model's pre-encoded tensors, not built as objects
        and encoded: that took a third of what the protocol added to a request over churn-score's."""
        model, results, head = await self.scored(route, name, version, body, who, charge)
        if len(results) == 1 and "error" not in results[0] and body.get("outputs") is None:
            return model.one_row(head, results[0])
        return to_json({**head, "outputs": model.answer(results, body.get("outputs"))})

    async def scored(self, route: str, name: str, version: str | None, body: dict, who: dict, charge) -> tuple:
        """The model, each row's result and the answer's head (model_name, model_version, id)."""
        model, layouts = self.model_of(name, version)
        with observed(route, name) as labels:
            bodies, vectors = model.rows(body.get("inputs"), lambda: next(iter(layouts.values())))
            if len(bodies) > self.max_rows:
                raise ProtocolError(400, f"at most {self.max_rows:,} rows per request, got {len(bodies):,}")
            if "outputs" in body:
                model.check_outputs(body["outputs"])
            if charge is not None:
                charge(len(bodies))
            pin = version
            if vectors is not None and version is None and len({tuple(names) for names in layouts.values()}) > 1:
                pin = CHAMPION  # a canary whose versions read different features: the vectors are in the champion's order
            requests = [model.route.request(row, pin, who) for row in model.validated(bodies)]
            for request, vector in zip(requests, vectors or ()):
                request["features"] = vector
            family = self.server.families[name]
            # one row awaited as churn-score awaits it: a task of its own would join its batch one turn of the loop later
            results = [await family.score(requests[0])] if len(requests) == 1 else await asyncio.gather(*map(family.score, requests))
            answered = {}
            for r in results:
                if "error" not in r:
                    answered = answered or r
                elif r["error"] == UNKNOWN_VERSION:
                    raise ProtocolError(404, r["detail"])
            labels.update(answered_by(answered))
            head = {"model_name": name, "model_version": answered.get("model", {}).get("version", version or ""),
                    "id": body.get("id") or who["request_id"]}
            return model, results, head


def protocol_router(server) -> APIRouter:
    """The v2 REST routes of the families `server` holds."""
    protocol = Protocol(server)
    router = APIRouter(prefix=PREFIX, tags=["Open Inference Protocol v2"])

    @router.get("/health/live")
    async def live() -> dict:
        return {"live": True}

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        ready = protocol.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @router.get("")
    async def server_metadata() -> dict:
        return SERVER_METADATA

    @router.get("/models/{name}", responses=INVALID)
    async def model_metadata(name: str) -> dict:
        return protocol.metadata(name, None)

    @router.get("/models/{name}/versions/{version}", responses=INVALID)
    async def version_metadata(name: str, version: str) -> dict:
        return protocol.metadata(name, version)

    @router.get("/models/{name}/ready", responses=INVALID)
    async def model_ready(name: str) -> dict:
        protocol.model_of(name, None)
        return {"name": name, "ready": True}

    @router.get("/models/{name}/versions/{version}/ready", responses=INVALID)
    async def version_ready(name: str, version: str) -> dict:
        protocol.model_of(name, version)
        return {"name": name, "ready": True}

    @router.post("/models/{name}/infer", openapi_extra=INFER_DOCUMENT, responses=INVALID)
    async def infer(request: Request, who: Caller, name: str) -> dict:
        """Score a batch of rows by the canary split: one request of the client's `inference` limit,
        and one row per customer of its `rows` limit, as churn-batch."""
        return await scored(request, who, name, None)

    @router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_DOCUMENT, responses=INVALID)
    async def infer_version(request: Request, who: Caller, name: str, version: str) -> dict:
        """Score a batch of rows by this version: one request of the client's `inference` limit, and
        one row per customer of its `rows` limit, as churn-batch."""
        return await scored(request, who, name, version)

    async def scored(request: Request, who: dict, name: str, version: str | None) -> dict:
        protocol.model_of(name, version)  # a 404 before the body is read
        body = infer_body(await request.body(), request.headers.get(BINARY_HEADER))
        charge = request.scope.get("state", {}).get("charge_rows")  # none with AUTH_MODE=off
        return await protocol.infer(f"v2/models/{name}/infer", name, version, body, who, charge)

    return router


def infer_body(content: bytes, header_length: str | None) -> dict:
    """An infer request's JSON, its inputs' data in place. With the binary tensor extension
    (`header_length`: the JSON's length; Triton's and KServe's clients send tensors so by default)
    the JSON is followed by the tensors' bytes, each input that has them saying how many
    (parameters.binary_data_size), in the order of the inputs."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(content):
            raise ProtocolError(400, f"{BINARY_HEADER} must be the length of the body's JSON part, at most "
                                f"{len(content)}; got {header_length!r}")
        content, binary = content[:int(header_length)], content[int(header_length):]
    try:
        body = json.loads(content)
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
        raise ProtocolError(400, f"the body is not JSON: {str(e)[:200]}") from e
    if not isinstance(body, dict):
        raise ProtocolError(400, "the body must be a JSON object with `inputs`")
    if not isinstance(body.get("id", ""), str):
        raise ProtocolError(400, "the request's `id` must be a string")
    at = 0
    for tensor in body.get("inputs") if isinstance(body.get("inputs"), list) else ():
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        name, kind = tensor.get("name"), tensor.get("datatype")
        if not isinstance(size, int) or size < 0 or at + size > len(binary):
            raise ProtocolError(400, f"input {name!r}: binary_data_size {size!r} is more than the "
                                f"{len(binary) - at} bytes left after the JSON")
        tensor["data"] = raw_values(binary[at:at + size], kind, name)
        at += size
    if at != len(binary):
        raise ProtocolError(400, f"{len(binary) - at} bytes after the JSON belong to no input (binary_data_size)")
    return body


def raw_values(raw: bytes, kind: str, name: str) -> list:
    """A tensor's values from its raw bytes: little-endian numbers, or BYTES elements each
    preceded by its length (4 bytes, little-endian)."""
    if kind == "BYTES":
        return text_elements(raw, name)
    if not isinstance(kind, str) or kind not in RAW:
        raise ProtocolError(400, f"input {name!r}: unknown datatype {kind!r}")
    if len(raw) % np.dtype(RAW[kind]).itemsize:
        raise ProtocolError(400, f"input {name!r}: {len(raw)} bytes are not a whole number of {kind} values")
    return np.frombuffer(raw, RAW[kind]).tolist()


def text_elements(raw: bytes, name: str) -> list[str]:
    """A raw BYTES tensor's elements, as UTF-8 text."""
    elements, at = [], 0
    while at < len(raw):
        if at + LENGTH.size > len(raw):
            raise ProtocolError(400, f"input {name!r}: raw BYTES contents end inside an element's length")
        (size,), at = LENGTH.unpack_from(raw, at), at + LENGTH.size
        if at + size > len(raw):
            raise ProtocolError(400, f"input {name!r}: raw BYTES contents end inside an element")
        elements.append(raw[at:at + size])
        at += size
    return decoded(elements, name)


def decoded(elements, name: str) -> list[str]:
    try:
        return [bytes(e).decode() for e in elements]
    except UnicodeDecodeError as e:
        raise ProtocolError(400, f"input {name!r}: BYTES elements must be UTF-8 text") from e


def raw_contents(kind: str, values: list) -> bytes:
    """The raw bytes of a tensor's values (raw_values' inverse)."""
    if kind == "BYTES":
        return b"".join(LENGTH.pack(len(e)) + e for e in (str(v).encode() for v in values))
    return np.asarray(values, dtype=RAW[kind]).tobytes()


def protocol_error_response(e: ProtocolError) -> JSONResponse:
    return JSONResponse({"error": e.detail}, status_code=e.status)

