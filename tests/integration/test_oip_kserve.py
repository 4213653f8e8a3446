"""The Open Inference Protocol against a real `bentoml serve` (authentication on, an API key), through
KServe's own v2 REST client (`kserve.InferenceRESTClient`, `InferRequest`, `InferInput`), its tensors
sent as it sends them by default, in the binary tensor extension: the server's liveness and
readiness, each model's readiness and metadata, infer by customer id for each family with the answers
the JSON routes give, by feature tensor in the order the model's metadata gives, a batch of many
rows, and the protocol's errors as the client raises them: an unknown model, a malformed tensor, no
credential. The server is test_oip.py's.

KServe's client runs in a process of its own (tests/clients/kserve_calls.py says why): the module
hands it every call at once and asserts on what each answered. KServe's SDK is in .venv without its
dependencies (tests/clients/kserve-requirements.txt, make install): its pins of protobuf, psutil and
python-dateutil are below the lock's and not needed by its REST client.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.families import FAMILIES
from tests.integration import test_oip
from tests.integration.conftest import latest_rows
from tests.integration.test_oip import API, TRANSACTION, key_header, stored_vectors

pytestmark = [pytest.mark.integration, pytest.mark.slow]
served, customers = test_oip.served, test_oip.customers  # its fixtures: a server of this module's own, its customers
CALLS = Path(__file__).resolve().parents[1] / "clients" / "kserve_calls.py"
SCORE = {"churn": "churn_probability", "fraud": "fraud_probability", "segment": "segment_id"}


def id_inputs(family: str, ids: list[str]) -> list:
    """The customers' ids, and for fraud the same transaction for each, one tensor per field."""
    inputs = [["customer_id", "BYTES", ids]]
    if family == "fraud":
        inputs += [[name, "FP64" if name == "amount" else "BYTES", [value] * len(ids)] for name, value in TRANSACTION.items()]
    return inputs


@pytest.fixture(scope="module")
def vectors(served, settings, customers) -> dict[str, np.ndarray]:
    """Per family, the first 8 customers' stored feature vectors, in the order of the model's metadata."""
    headers = key_header(served)
    return {family: stored_vectors(settings, served, httpx.get(f"{served[0]}/v2/models/{family}", headers=headers, timeout=30).json(),
                                   customers[:8], TRANSACTION if family == "fraud" else None) for family in FAMILIES}


@pytest.fixture(scope="module")
def answered(served, customers, vectors, table, tmp_path_factory) -> dict:
    """What KServe's client got for each call of the module."""
    if importlib.util.find_spec("kserve") is None:  # found, not imported: it is imported in the calls' own process
        pytest.fail("KServe's SDK is not installed: `make install` installs tests/clients/kserve-requirements.txt")
    prospects = [f"PROSPECT-{i}" for i in range(8)]
    calls = [{"call": "server_live"}, {"call": "server_ready"},
             {"call": "model_ready", "model": "churn", "key": False}, {"call": "model_ready", "model": "loans"},
             {"call": "infer", "model": "churn", "inputs": id_inputs("churn", customers), "request_id": "kserve-churn"},
             {"call": "infer", "model": "churn", "inputs": id_inputs("churn", latest_rows(table, 500).index.tolist() + ["NOBODY"]),
              "id": "batch"},
             {"call": "infer", "model": "loans", "inputs": id_inputs("churn", customers[:1]), "id": "unknown_model"},
             {"call": "infer", "model": "churn", "inputs": [["customer_id", "FP64", [1.0]]], "id": "malformed"},
             {"call": "infer", "model": "churn", "inputs": id_inputs("churn", customers[:1]), "key": False, "id": "no_key"}]
    for family in FAMILIES:
        calls += [{"call": "model_ready", "model": family, "id": f"ready_{family}"}, {"call": "metadata", "model": family, "id": f"metadata_{family}"},
                  {"call": "infer", "model": family, "inputs": id_inputs(family, customers[:10]), "id": f"by_id_{family}"},
                  {"call": "infer", "model": family, "id": f"as_given_{family}",
                   "inputs": [*id_inputs(family, prospects), ["features", "FP32", vectors[family].tolist()]]}]
    for i, call in enumerate(calls):
        call.setdefault("id", call.get("request_id", f"{call['call']}_{i}"))
    plan = tmp_path_factory.mktemp("kserve") / "plan.json"
    plan.write_text(json.dumps({"url": served[0], "key": served[1], "calls": calls}))
    done = subprocess.run([sys.executable, str(CALLS), str(plan)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_the_server_and_its_models_are_live_ready_and_described_to_kserve(answered):
    assert answered["server_live_0"] is True and answered["server_ready_1"] is True
    assert all(answered[f"ready_{family}"] is True for family in FAMILIES)
    assert answered["model_ready_2"] is False, "no credential: a 401, which the client reads as not ready"
    assert answered["model_ready_3"] is False, "an unknown model: a 404"
    for family in FAMILIES:
        metadata = answered[f"metadata_{family}"]  # as KServe's v2 models parse it
        assert metadata["name"] == family and metadata["versions"] and metadata["platform"]
        assert (metadata["inputs"][0]["name"], metadata["inputs"][0]["datatype"], metadata["inputs"][0]["shape"]) == (
            "customer_id", "BYTES", [-1])
        assert metadata["inputs"][-1]["name"] == "features" and metadata["inputs"][-1]["datatype"] == "FP32"
        assert {t["name"] for t in metadata["outputs"]} >= {"model_version", "model_role", "error"}


def test_infer_by_id_through_kserve_answers_what_the_json_routes_answer_for_each_family(answered, served, customers):
    churn = answered["kserve-churn"]
    assert (churn["model_name"], churn["id"]) == ("churn", "kserve-churn")
    with httpx.Client(base_url=served[0], headers=key_header(served), timeout=30) as http:
        expected = [http.post(f"{API}/churn-score", json={"customer_id": c}).json() for c in customers]
        assert churn["outputs"]["churn_probability"] == [e["churn_probability"] for e in expected]
        assert churn["outputs"]["risk_level"] == [e["risk_level"] for e in expected]
        assert churn["outputs"]["model_version"] == [e["model"]["version"] for e in expected]
        fraud = answered["by_id_fraud"]["outputs"]
        expected = [http.post(f"{API}/fraud-detection", json={"customer_id": c, "transaction": TRANSACTION}).json()
                    for c in customers[:10]]
        assert fraud["fraud_probability"] == [e["fraud_probability"] for e in expected]
        assert fraud["is_fraud"] == [e["is_fraud"] for e in expected]
        segment = answered["by_id_segment"]["outputs"]
        assert segment["segment_id"] == [http.post(f"{API}/segment", json={"customer_id": c}).json()["segment_id"]
                                         for c in customers[:10]]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_features_tensor_sent_through_kserve_scores_as_the_customer_whose_vector_it_is(answered, family):
    by_id, as_given = answered[f"by_id_{family}"]["outputs"], answered[f"as_given_{family}"]["outputs"]
    assert as_given["error"] == [""] * 8
    # float32 on the wire: the vectors are the stored values to 7 digits, and so are the answers
    assert np.allclose(as_given[SCORE[family]], by_id[SCORE[family]][:8], rtol=1e-5, atol=1e-6)


def test_a_batch_of_many_rows_through_kserve_is_answered_row_for_row_with_unknown_customers_marked(answered):
    outputs = answered["batch"]["outputs"]
    assert outputs["error"] == [""] * 500 + ["unknown_customer"]
    assert all(p is not None and 0 <= p <= 1 for p in outputs["churn_probability"][:500])
    assert outputs["churn_probability"][500] is None


def test_kserve_raises_the_protocols_errors_for_an_unknown_model_a_malformed_tensor_and_no_credential(answered):
    assert answered["unknown_model"]["status"] == 404 and "not served here" in answered["unknown_model"]["message"]
    assert answered["malformed"]["status"] == 400 and "'customer_id'" in answered["malformed"]["message"]
    assert answered["no_key"]["status"] == 401
