"""The Open Inference Protocol against a real `bentoml serve` (authentication on, an API key),
through a client we did not write: Triton's (`tritonclient.http`). Readiness and metadata, infer by
customer id for each family, a batch of many rows, the same probabilities as the JSON routes, and
the protocol's errors: an unknown model, a malformed tensor, no credential."""

import httpx
import numpy as np
import pytest

from core.api_keys import new_key
from loadtests.servers import stop
from tests.integration.conftest import latest_rows, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
API = "/api/v1/inference"
TRANSACTION = {"amount": 39.32, "merchant_category": "groceries", "channel": "pos", "country": "GB",
               "device_id": "D0000001-0", "timestamp": "2026-10-15T13:56:49Z"}


@pytest.fixture(scope="module")
def served(settings, served_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("oip")
    keys = work / "api_keys.json"
    key = new_key(keys, "oip-tests", ["inference"])
    process, url = start_server(settings, work, AUTH_MODE="on", AUTH_API_KEYS_FILE=str(keys), SERVING_REGISTRY_POLL_S="0")
    yield url, key
    stop(process)


@pytest.fixture(scope="module")
def triton(served):
    import tritonclient.http as triton_http

    url, _ = served
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def customers(table):
    return latest_rows(table, 40).index.tolist()


def key_header(served) -> dict:
    return {"X-API-Key": served[1]}


def tensor(name: str, values: list, datatype: str = "BYTES"):
    import tritonclient.http as triton_http

    given = triton_http.InferInput(name, [len(values)], datatype)
    given.set_data_from_numpy(np.array(values, dtype=object if datatype == "BYTES" else np.float64), binary_data=False)
    return given


def fraud_inputs(customers: list[str]) -> list:
    return [tensor("customer_id", customers)] + [
        tensor(name, [value] * len(customers), "FP64" if name == "amount" else "BYTES") for name, value in TRANSACTION.items()]


def test_the_server_and_its_models_are_live_ready_and_described(triton, served):
    headers = key_header(served)
    assert triton.is_server_live() and triton.is_server_ready()
    for model in ("churn", "fraud", "segment"):
        assert triton.is_model_ready(model, headers=headers)
    metadata = triton.get_model_metadata("fraud", headers=headers)
    assert metadata["inputs"][0] == {"name": "customer_id", "datatype": "BYTES", "shape": [-1], "parameters": {"optional": False}}
    assert {o["name"] for o in metadata["outputs"]} >= {"fraud_probability", "is_fraud", "threshold", "reasons", "error"}
    version = metadata["versions"][0]
    assert triton.is_model_ready("fraud", model_version=version, headers=headers)


def test_infer_by_id_answers_what_the_json_routes_answer_for_each_family(triton, served, customers):
    url, _ = served
    headers = key_header(served)
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        churn = triton.infer("churn", [tensor("customer_id", customers)], headers=headers)
        expected = [http.post(f"{API}/churn-score", json={"customer_id": c}).json() for c in customers]
        assert churn.as_numpy("churn_probability").tolist() == [e["churn_probability"] for e in expected]
        assert churn.as_numpy("risk_level").astype(str).tolist() == [e["risk_level"] for e in expected]

        fraud = triton.infer("fraud", fraud_inputs(customers[:10]), headers=headers)
        expected = [http.post(f"{API}/fraud-detection", json={"customer_id": c, "transaction": TRANSACTION}).json()
                    for c in customers[:10]]
        assert fraud.as_numpy("fraud_probability").tolist() == [e["fraud_probability"] for e in expected]
        assert fraud.as_numpy("is_fraud").tolist() == [e["is_fraud"] for e in expected]

        segment = triton.infer("segment", [tensor("customer_id", customers[:10])], headers=headers)
        expected = [http.post(f"{API}/segment", json={"customer_id": c}).json() for c in customers[:10]]
        assert segment.as_numpy("segment_id").tolist() == [e["segment_id"] for e in expected]
        assert segment.as_numpy("model_version").astype(str).tolist() == [e["model"]["version"] for e in expected]


def test_a_batch_of_many_rows_is_answered_row_for_row_with_unknown_customers_marked(triton, served, table):
    rows = latest_rows(table, 500).index.tolist() + ["NOBODY"]
    result = triton.infer("churn", [tensor("customer_id", rows)], headers=key_header(served))
    errors = result.as_numpy("error").astype(str).tolist()
    assert errors == [""] * 500 + ["unknown_customer"]
    assert np.isfinite(result.as_numpy("churn_probability")[:500]).all() and np.isnan(result.as_numpy("churn_probability")[500])


def test_an_unknown_model_a_malformed_tensor_and_no_credential_are_the_protocols_errors(triton, served, customers):
    from tritonclient.utils import InferenceServerException

    headers = key_header(served)
    with pytest.raises(InferenceServerException) as unknown:
        triton.infer("loans", [tensor("customer_id", customers[:1])], headers=headers)
    assert unknown.value.status() == "404" and "not served here" in unknown.value.message()
    with pytest.raises(InferenceServerException) as malformed:
        triton.infer("churn", [tensor("customer_id", [1.0], "FP64")], headers=headers)
    assert malformed.value.status() == "400" and "'customer_id'" in malformed.value.message()
    with pytest.raises(InferenceServerException) as refused:
        triton.infer("churn", [tensor("customer_id", customers[:1])])
    assert refused.value.status() == "401"
