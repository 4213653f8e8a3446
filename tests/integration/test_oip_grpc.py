"""The Open Inference Protocol over gRPC, served by the workers of a real `bentoml serve` (two of
them, sharing the port), through Triton's own gRPC client: readiness and metadata, infer by id and
by feature vector for each family with the answers the REST routes give, a batch of many rows, and
the refusals as gRPC status codes. The server is test_oip.py's (authentication on, an API key)."""

import numpy as np
import pytest

from tests.integration.conftest import latest_rows
from tests.integration.test_oip import TRANSACTION, customers, key_header, served, stored_vectors, tensor, triton  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def over_grpc(served):
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{served[2]}")
    yield client
    client.close()


def grpc_key(served) -> dict:
    return {"x-api-key": served[1]}  # gRPC metadata keys are lower case


def grpc_tensor(name: str, values, datatype: str = "BYTES"):
    import tritonclient.grpc as triton_grpc

    values = np.asarray(values, dtype=object if datatype == "BYTES" else {"FP64": np.float64, "FP32": np.float32}[datatype])
    given = triton_grpc.InferInput(name, list(values.shape), datatype)
    given.set_data_from_numpy(values)
    return given


def grpc_inputs(family: str, ids: list[str]) -> list:
    inputs = [grpc_tensor("customer_id", ids)]
    if family == "fraud":
        inputs += [grpc_tensor(name, [value] * len(ids), "FP64" if name == "amount" else "BYTES") for name, value in TRANSACTION.items()]
    return inputs


def rest_inputs(family: str, ids: list[str]) -> list:
    inputs = [tensor("customer_id", ids)]
    if family == "fraud":
        inputs += [tensor(name, [value] * len(ids), "FP64" if name == "amount" else "BYTES") for name, value in TRANSACTION.items()]
    return inputs


def values(result, output: str) -> list:
    """An output's values, BYTES as text (Triton's gRPC client gives bytes, its HTTP client text)."""
    return [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy(output).tolist()]


OUTPUTS = {"churn": ("churn_probability", "risk_level"), "fraud": ("fraud_probability", "outcome", "is_fraud", "threshold"),
           "segment": ("segment_id", "segment_name")}


def test_the_server_and_its_models_are_live_ready_and_described_over_grpc(over_grpc, served):
    headers = grpc_key(served)
    assert over_grpc.is_server_live() and over_grpc.is_server_ready()
    assert over_grpc.get_server_metadata(headers=headers).name == "fintech-serving"
    for family in OUTPUTS:
        assert over_grpc.is_model_ready(family, headers=headers)
    metadata = over_grpc.get_model_metadata("fraud", headers=headers, as_json=True)
    assert [i["name"] for i in metadata["inputs"]][:2] == ["customer_id", "amount"] and metadata["inputs"][-1]["name"] == "features"
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]}["is_fraud"] == "BOOL"
    assert over_grpc.is_model_ready("fraud", model_version=metadata["versions"][0], headers=headers)


@pytest.mark.parametrize("family", list(OUTPUTS))
def test_infer_over_grpc_answers_what_rest_answers_by_id_and_by_feature_vector(over_grpc, triton, served, settings, customers,
                                                                                family):
    headers, ids = key_header(served), customers[:10]
    by_rest = triton.infer(family, rest_inputs(family, ids), headers=headers)
    by_grpc = over_grpc.infer(family, grpc_inputs(family, ids), headers=grpc_key(served))
    for output in (*OUTPUTS[family], "model_version", "error"):
        assert values(by_grpc, output) == values(by_rest, output), output
    assert values(by_grpc, "error") == [""] * len(ids)

    metadata = triton.get_model_metadata(family, headers=headers)
    vectors = stored_vectors(settings, served, metadata, ids, TRANSACTION if family == "fraud" else None).astype(np.float32)
    prospects = [f"PROSPECT-{i}" for i in range(len(ids))]
    as_given = over_grpc.infer(family, [*grpc_inputs(family, prospects), grpc_tensor("features", vectors, "FP32")],
                               headers=grpc_key(served))
    assert values(as_given, "error") == [""] * len(ids)
    assert np.allclose(as_given.as_numpy(OUTPUTS[family][0]), by_rest.as_numpy(OUTPUTS[family][0]), rtol=1e-5, atol=1e-6)


def test_a_batch_of_many_rows_over_grpc_marks_the_unknown_customer(over_grpc, served, table):
    rows = latest_rows(table, 500).index.tolist() + ["NOBODY"]
    result = over_grpc.infer("churn", [grpc_tensor("customer_id", rows)], headers=grpc_key(served))
    assert values(result, "error") == [""] * 500 + ["unknown_customer"]
    assert np.isfinite(result.as_numpy("churn_probability")[:500]).all() and np.isnan(result.as_numpy("churn_probability")[500])


def test_refusals_over_grpc_are_the_status_codes_rest_answers_mean(over_grpc, served, customers):
    from tritonclient.utils import InferenceServerException

    headers = grpc_key(served)

    def refused(*args, **kwargs) -> InferenceServerException:
        with pytest.raises(InferenceServerException) as caught:
            over_grpc.infer(*args, **kwargs)
        return caught.value

    unknown = refused("loans", [grpc_tensor("customer_id", customers[:1])], headers=headers)
    assert unknown.status() == "StatusCode.NOT_FOUND" and "not served here" in unknown.message()
    malformed = refused("churn", [grpc_tensor("customer_id", [1.0], "FP64")], headers=headers)
    assert malformed.status() == "StatusCode.INVALID_ARGUMENT" and "'customer_id'" in malformed.message()
    wrong_width = refused("churn", [grpc_tensor("customer_id", customers[:1]), grpc_tensor("features", [[1.0, 2.0]], "FP32")],
                          headers=headers)
    assert wrong_width.status() == "StatusCode.INVALID_ARGUMENT" and "'features'" in wrong_width.message()
    assert refused("churn", [grpc_tensor("customer_id", customers[:1])]).status() == "StatusCode.UNAUTHENTICATED"
    wrong_key = refused("churn", [grpc_tensor("customer_id", customers[:1])], headers={"x-api-key": "not-a-key"})
    assert wrong_key.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as metadata:
        over_grpc.get_model_metadata("churn")
    assert metadata.value.status() == "StatusCode.UNAUTHENTICATED"
