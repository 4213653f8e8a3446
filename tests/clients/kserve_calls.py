"""KServe's v2 REST client (`kserve.InferenceRESTClient`) making the calls of a plan against a running
server, in a process of its own; prints what each call answered, as JSON.

    python tests/clients/kserve_calls.py plan.json

Its own process because `import kserve` registers the protocol's messages (inference.ModelInferRequest
and the rest) in protobuf's default descriptor pool from its own generated module, and the service's
gRPC side registers the same names from Triton's: one process can hold one of them, and the tests
import the service's. The plan: {"url", "key", "calls": [{"id", "call", ...}]}, each call one of

    {"call": "server_live"} | {"call": "server_ready"}
    {"call": "model_ready", "model", "key": bool}
    {"call": "metadata", "model"}      the model's metadata read over HTTP, parsed by KServe's v2 models
    {"call": "infer", "model", "inputs": [[name, datatype, values]], "request_id"?, "key": bool}

An infer answers {"model_name", "id", "outputs": {name: values}} or {"status", "message"}.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse

DTYPES = {"BYTES": object, "FP64": np.float64, "FP32": np.float32}


def tensor(name: str, datatype: str, values) -> InferInput:
    array = np.asarray(values, dtype=DTYPES[datatype])
    given = InferInput(name, list(array.shape), datatype)
    given.set_data_from_numpy(array)  # binary_data=True, the client's default: the binary tensor extension
    return given


def plain(values: np.ndarray) -> list:
    """An output's values as JSON holds them: text for BYTES, None for NaN."""
    return [v.decode() if isinstance(v, bytes) else None if isinstance(v, float) and math.isnan(v) else v
            for v in values.tolist()]


async def make(client: InferenceRESTClient, url: str, key: str, call: dict) -> object:
    headers = {"X-API-Key": key} if call.get("key", True) else None
    if call["call"] == "server_live":
        return await client.is_server_live(url)
    if call["call"] == "server_ready":
        return await client.is_server_ready(url)
    if call["call"] == "model_ready":
        return await client.is_model_ready(url, call["model"], headers=headers)
    if call["call"] == "metadata":
        answer = httpx.get(f"{url}/v2/models/{call['model']}", headers=headers, timeout=30).json()
        return ModelMetadataResponse.model_validate(answer).model_dump()
    request = InferRequest(model_name=call["model"], request_id=call.get("request_id"),
                           infer_inputs=[tensor(*given) for given in call["inputs"]])
    try:
        response = await client.infer(url, request, model_name=call["model"], headers=headers)
    except httpx.HTTPStatusError as e:
        return {"status": e.response.status_code, "message": str(e)}
    return {"model_name": response.model_name, "id": response.id,
            "outputs": {output.name: plain(output.as_numpy()) for output in response.outputs}}


async def main(plan: dict) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        return {call["id"]: await make(client, plan["url"], plan["key"], call) for call in plan["calls"]}
    finally:
        await client.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))))
