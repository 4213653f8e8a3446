"""The Open Inference Protocol against a real `bentoml serve` (authentication on, an API key),
through a client we did not write: Triton's (`tritonclient.http`). Readiness and metadata, infer by
customer id and by feature tensor for each family, a batch of many rows, the same probabilities as
the JSON routes, and the protocol's errors: an unknown model, a malformed tensor, no credential.
Prospects: a customer the store does not know is scored from a whole feature vector (here a known
customer's, read with Feast's own SDK, under another id) and told what is missing from a partial one."""

import httpx
import numpy as np
import pytest

from bentos.schemas import Transaction
from core.api_keys import new_key
from loadtests.servers import free_port, stop
from tests.integration.conftest import latest_rows, start_server
from training import store

pytestmark = [pytest.mark.integration, pytest.mark.slow]
API = "/api/v1/inference"
TRANSACTION = {"amount": 39.32, "merchant_category": "groceries", "channel": "pos", "country": "GB",
               "device_id": "D0000001-0", "timestamp": "2026-10-15T13:56:49Z"}


@pytest.fixture(scope="module")
def served(settings, served_models, tmp_path_factory):
    """The server's URL and a key; its gRPC port is served[2] (test_oip_grpc.py)."""
    work = tmp_path_factory.mktemp("oip")
    keys = work / "api_keys.json"
    key = new_key(keys, "oip-tests", ["inference"])
    grpc_port = free_port()
    process, url = start_server(settings, work, AUTH_MODE="on", AUTH_API_KEYS_FILE=str(keys), SERVING_REGISTRY_POLL_S="0",
                                SERVING_GRPC_PORT=str(grpc_port), SERVING_WORKERS="2")
    yield url, key, grpc_port
    stop(process)


@pytest.fixture(scope="module")
def triton(served):
    import tritonclient.http as triton_http

    url = served[0]
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
    url = served[0]
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
        assert fraud.as_numpy("outcome").astype(str).tolist() == [e["outcome"] for e in expected]

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


def stored_vectors(settings, served, model: dict, customers: list[str], transaction: dict | None = None) -> np.ndarray:
    """Each customer's feature vector as Feast's SDK reads it for the FeatureService the champion
    reads (the JSON route says which), in the order the model's metadata gives."""
    [given] = [i for i in model["inputs"] if i["name"] == "features"]
    names = given["parameters"]["feature_names"]
    path, body = {"churn": ("churn-score", {}), "segment": ("segment", {}), "fraud": ("fraud-detection", {"transaction": TRANSACTION})}[
        model["name"]]
    answer = httpx.post(f"{served[0]}{API}/{path}", json={"customer_id": customers[0], **body}, headers=key_header(served)).json()
    feast = store.open_store(settings)
    service = feast.get_feature_service(answer["model"]["feature_service"])
    extra = Transaction(**transaction).request_data() if transaction else {}
    read = feast.get_online_features(features=service, entity_rows=[{"customer_id": c, **extra} for c in customers]).to_dict()
    assert given["shape"] == [-1, len(names)] and set(names) <= set(read)
    return np.array([read[name] for name in names], dtype=np.float64).T


def vectors_tensor(vectors: np.ndarray):
    import tritonclient.http as triton_http

    given = triton_http.InferInput("features", list(vectors.shape), "FP32")
    given.set_data_from_numpy(vectors.astype(np.float32), binary_data=False)
    return given


@pytest.mark.parametrize("family", ["churn", "fraud", "segment"])
def test_a_prospect_with_a_whole_feature_vector_scores_as_the_customer_whose_vector_it_is(triton, served, settings, customers, family):
    headers = key_header(served)
    metadata = triton.get_model_metadata(family, headers=headers)
    if metadata["inputs"][-1]["parameters"]["feature_names"] != triton.get_model_metadata(
            family, model_version=metadata["versions"][0], headers=headers)["inputs"][-1]["parameters"]["feature_names"]:
        pytest.fail("the unversioned metadata must give the champion's (the first version's) feature order")
    known = customers[:8]
    vectors = stored_vectors(settings, served, metadata, known, TRANSACTION if family == "fraud" else None)
    prospects = [f"PROSPECT-{i}" for i in range(len(known))]
    by_id = triton.infer(family, fraud_inputs(known) if family == "fraud" else [tensor("customer_id", known)], headers=headers)
    ids = fraud_inputs(prospects) if family == "fraud" else [tensor("customer_id", prospects)]
    as_given = triton.infer(family, [*ids, vectors_tensor(vectors)], headers=headers)
    assert as_given.as_numpy("error").astype(str).tolist() == [""] * len(known)
    output = {"churn": "churn_probability", "fraud": "fraud_probability", "segment": "segment_id"}[family]
    # float32 on the wire: the vectors are the stored values to 7 digits, and so are the answers
    assert np.allclose(as_given.as_numpy(output), by_id.as_numpy(output), rtol=1e-5, atol=1e-6)


def test_the_json_route_scores_a_prospect_with_every_feature_and_names_what_a_partial_one_lacks(triton, served, settings, customers):
    url = served[0]
    metadata = triton.get_model_metadata("churn", headers=key_header(served))
    names = metadata["inputs"][-1]["parameters"]["feature_names"]
    [vector] = stored_vectors(settings, served, metadata, customers[:1])
    with httpx.Client(base_url=url, headers=key_header(served), timeout=30) as http:
        known = http.post(f"{API}/churn-score", json={"customer_id": customers[0]}).json()
        whole = http.post(f"{API}/churn-score", json={"customer_id": "APPLICANT-1", "features": dict(zip(names, vector.tolist()))})
        partial = http.post(f"{API}/churn-score", json={"customer_id": "APPLICANT-2", "features": {"days_since_last_txn": 80}})
    assert whole.status_code == 200 and whole.json()["churn_probability"] == known["churn_probability"], whole.text
    assert whole.json()["feature_sources"]["request"] == names and whole.json()["feature_sources"]["default"] == []
    assert partial.status_code == 422 and partial.json()["error"] == "incomplete_features", partial.text
    missing = {e["field"] for e in partial.json()["fields"]}
    assert len(missing) == len(names) - 1 and "features.days_since_last_txn" not in missing and "features.spend_30d" in missing


def test_tensors_sent_as_the_clients_send_them_by_default_in_binary_get_the_same_answers(triton, served, customers):
    import tritonclient.http as triton_http

    def binary(name: str, values: list, datatype: str = "BYTES"):
        given = triton_http.InferInput(name, [len(values)], datatype)
        given.set_data_from_numpy(np.array(values, dtype=object if datatype == "BYTES" else np.float64))  # binary_data=True
        return given

    headers, ids = key_header(served), customers[:10]
    as_json = triton.infer("fraud", fraud_inputs(ids), headers=headers)
    as_binary = triton.infer("fraud", [binary("customer_id", ids)] + [
        binary(name, [value] * len(ids), "FP64" if name == "amount" else "BYTES") for name, value in TRANSACTION.items()], headers=headers)
    assert as_binary.as_numpy("fraud_probability").tolist() == as_json.as_numpy("fraud_probability").tolist()
    assert as_binary.as_numpy("error").astype(str).tolist() == [""] * len(ids)
