"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), served by every worker
process beside its HTTP port: each worker starts a gRPC server on its own event loop, all bound to
SERVING_GRPC_PORT with SO_REUSEPORT, so the kernel spreads connections over the workers as it does
for HTTP and a request is scored in the process that received it (no hop). 0 turns it off.

    grpcurl -plaintext -H "x-api-key: $KEY" localhost:8001 inference.GRPCInferenceService/ServerReady

It answers what the REST routes answer (bentos/oip.py's Protocol): ServerLive and ServerReady (no
credential, like /v2/health), ServerMetadata, ModelMetadata and ModelReady (a valid credential),
ModelInfer (scope `inference`, and the client's `inference` and `rows` limits). The credential is
the request metadata's `x-api-key` or `authorization: Bearer <token>`. The tensors may come as typed
`contents` or as `raw_input_contents` (what Triton's client sends); the outputs go as
`raw_output_contents`, which both Triton's and KServe's clients read. Refusals are gRPC status
codes: INVALID_ARGUMENT (400, 422), UNAUTHENTICATED (401), PERMISSION_DENIED (403), NOT_FOUND (404),
RESOURCE_EXHAUSTED (429, and past SERVING_MAX_IN_PROGRESS calls at once), UNAVAILABLE (503).

The message classes are the protocol's own, generated from its .proto and shipped in Triton's
client package (tritonclient.grpc.service_pb2); the RPCs that are Triton's own extensions answer
UNIMPLEMENTED. gRPC's tensor metadata has no parameters: the order of the `features` input is in
the REST metadata (GET /v2/models/{name}).
"""

from __future__ import annotations

import logging
import re
import uuid

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as rpc

from bentos.auth import Authenticate, AuthSettings, Client, Refused
from bentos.handling import REQUEST_ID_MAX_LENGTH, REQUEST_ID_PATTERN, ClientError, ScoringFailed
from bentos.oip import RAW, SERVER_METADATA, Protocol, ProtocolError, decoded, raw_contents, raw_values

log = logging.getLogger(__name__)
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
         404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
         429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}
# each datatype's field in typed contents
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
            "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def tensors_of(request: pb.ModelInferRequest) -> list[dict]:
    """The request's inputs in the REST form ({name, datatype, shape, data}), which bentos/oip.py
    checks against the model's inputs."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(400, f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs")
    tensors = []
    for i, given in enumerate(request.inputs):
        kind = given.datatype
        if kind != "BYTES" and kind not in RAW:
            raise ProtocolError(400, f"input {given.name!r}: unknown datatype {kind!r}")
        if raw:
            data = raw_values(raw[i], kind, given.name)
        elif kind == "BYTES":
            data = decoded(given.contents.bytes_contents, given.name)
        else:
            data = list(getattr(given.contents, CONTENTS.get(kind, "fp32_contents")))
        tensors.append({"name": given.name, "datatype": kind, "shape": list(given.shape), "data": data})
    return tensors


def response_of(answer: dict) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=answer["model_name"], model_version=answer["model_version"], id=answer["id"])
    for tensor in answer["outputs"]:
        response.outputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        response.raw_output_contents.append(raw_contents(tensor["datatype"], tensor["data"]))  # null: NaN
    return response


def tensor_metadata(entries: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=e["name"], datatype=e["datatype"], shape=e["shape"]) for e in entries]


class Inference(rpc.GRPCInferenceServiceServicer):
    """The protocol's RPCs; `gate` identifies callers as the HTTP middleware does (None: AUTH_MODE=off)."""

    def __init__(self, protocol: Protocol, gate: Authenticate | None):
        self.protocol, self.gate = protocol, gate

    async def caller(self, context: grpc.aio.ServicerContext, scope: str | None = None) -> Client | None:
        """The client the call's metadata names, holding `scope` and within its limit; or abort."""
        if self.gate is None:
            return None
        headers = [(key.encode(), value.encode("latin-1")) for key, value in context.invocation_metadata() or ()
                   if not key.endswith("-bin") and isinstance(value, str)]
        try:
            client = await self.gate.identify(headers)
            if scope is not None:
                if scope not in client.scopes:
                    raise Refused(403, "insufficient_scope", f"this call needs the scope {scope!r}", scope=scope)
                self.gate.hold_to_limit(client, scope)
        except Refused as refused:
            await context.abort(CODES.get(refused.status, grpc.StatusCode.UNKNOWN), refused.detail)
        return client

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.protocol.ready())

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        await self.caller(context)
        return pb.ServerMetadataResponse(**SERVER_METADATA)

    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        await self.caller(context)
        try:
            described = self.protocol.metadata(request.name, request.version or None)
        except ProtocolError as e:
            await context.abort(CODES[e.status], e.detail)
        return pb.ModelMetadataResponse(name=described["name"], versions=described["versions"], platform=described["platform"],
                                        inputs=tensor_metadata(described["inputs"]), outputs=tensor_metadata(described["outputs"]))

    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        await self.caller(context)
        try:
            self.protocol.model_of(request.name, request.version or None)
        except ProtocolError as e:
            await context.abort(CODES[e.status], e.detail)
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:
        client = await self.caller(context, "inference")
        charge = None if client is None else (lambda rows: self.gate.hold_to_limit(client, "rows", rows))
        request_id = request.id if len(request.id) <= REQUEST_ID_MAX_LENGTH and re.fullmatch(REQUEST_ID_PATTERN, request.id) else ""
        who = {"request_id": request_id or uuid.uuid4().hex, "client_id": client.client_id if client is not None else ""}
        version = request.model_version or None
        try:
            tensors = tensors_of(request)
            answer = await self.protocol.infer(f"grpc/v2/models/{request.model_name}/infer", request.model_name, version,
                                               {"inputs": tensors, "id": request.id, **asked_outputs(request)}, who, charge)
        except (ClientError, Refused) as e:  # ProtocolError is a ClientError; Refused: over the rows limit
            await context.abort(CODES.get(e.status, grpc.StatusCode.INVALID_ARGUMENT), e.detail)
        except ScoringFailed as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        return response_of(answer)


def asked_outputs(request) -> dict:
    """The outputs a request names, as the REST body's `outputs`; none: every output."""
    return {"outputs": [{"name": o.name} for o in request.outputs]} if request.outputs else {}


async def start_grpc(server, auth: AuthSettings, host: str, port: int, max_in_progress: int) -> grpc.aio.Server:
    """The gRPC server of this worker, on its event loop, sharing `port` with the other workers."""
    gate = Authenticate(None, auth) if auth.mode == "on" else None
    grpc_server = grpc.aio.server(options=[("grpc.so_reuseport", 1)], maximum_concurrent_rpcs=max_in_progress)
    rpc.add_GRPCInferenceServiceServicer_to_server(Inference(Protocol(server), gate), grpc_server)
    grpc_server.add_insecure_port(f"{host}:{port}")
    await grpc_server.start()
    log.info("the Open Inference Protocol over gRPC on %s:%d", host, port)
    return grpc_server
