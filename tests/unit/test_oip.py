"""The Open Inference Protocol routes (bentos/oip.py) over families that answer without models: the
tensors they describe and read, the rows they hand to the family, the answers, and the protocol's
errors. The same routes against a real `bentoml serve`, through Triton's own client:
tests/integration/test_oip.py."""

import asyncio
import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from bentos.api import create_app
from bentos.config import ServingSettings
from bentos.family import Server

MODEL = {"name": "churn", "version": "3", "role": "champion", "feature_service": "churn_v1"}
TRANSACTION = {"amount": 39.32, "merchant_category": "groceries", "channel": "pos", "country": "GB",
               "device_id": "D0000001-0", "timestamp": "2026-10-15T13:56:49Z"}


LAYOUT = ["days_since_last_txn", "spend_30d", "txn_count_30d"]


def version(number: str, features: list[str] = LAYOUT) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(version=number), features=features)


class Family:
    """Answers every customer but NOBODY; serves version 3 (a test may add a challenger); keeps the
    requests it was handed."""

    def __init__(self, name: str):
        self.name, self.handed = name, []
        self.versions = SimpleNamespace(live=SimpleNamespace(scorers={"champion": version("3")}))

    def ready(self) -> bool:
        return True

    async def score(self, request: dict) -> dict:
        self.handed.append(request)
        model = {**MODEL, "name": self.name}
        scorers = self.versions.live.scorers
        if request["pin"] not in (None, *scorers, *(v.info.version for v in scorers.values())):
            return {"customer_id": request["customer_id"], "error": "unknown_version", "detail": f"version {request['pin']} is not served"}
        if request["customer_id"] == "NOBODY":
            return {"customer_id": request["customer_id"], "error": "unknown_customer", "model": model}
        reasons = [{"feature": "days_since_last_txn", "code": "ACT01", "sentence": "Long ago", "shap_value": 0.5,
                    "feature_value": 3.0, "direction": "increases risk"}]
        answers = {"churn": {"churn_probability": 0.25, "risk_level": "medium", "reasons": reasons, "principal_reasons": []},
                   "fraud": {"fraud_probability": 0.75, "outcome": "review", "is_fraud": True, "threshold": 0.5,
                             "block_threshold": 0.9, "rules": [{"rule": "large-amount", "code": "RUL04", "outcome": "review",
                                                                "sentence": "Above the limit"}],
                             "reasons": reasons, "principal_reasons": reasons},
                   "segment": {"segment_id": 2, "segment_name": "diners"}}
        return {"customer_id": request["customer_id"], **answers[self.name], "model": model,
                "feature_sources": {"request": [], "default": []}}


@pytest.fixture
def served():
    server = Server(ServingSettings(families="churn,fraud,segment"))
    server.families = {name: Family(name) for name in ("churn", "fraud", "segment")}
    return server, TestClient(create_app(server))


def infer(client, model: str, inputs: list[dict], version: str | None = None):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return client.post(path, json={"id": "r1", "inputs": inputs})


def ids(*customers: str) -> dict:
    return {"name": "customer_id", "datatype": "BYTES", "shape": [len(customers)], "data": list(customers)}


def test_the_server_and_each_model_say_they_are_live_ready_and_what_they_take(served):
    _, client = served
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "fintech-serving"
    fraud = client.get("/v2/models/fraud").json()
    assert fraud["versions"] == ["3"] and fraud["platform"] == "fintech-serving_xgboost"
    assert [i["name"] for i in fraud["inputs"]] == ["customer_id", "amount", "merchant_category", "channel", "country",
                                                    "device_id", "timestamp", "features"]
    assert {i["name"]: i["datatype"] for i in fraud["inputs"]}["amount"] == "FP64"
    assert {o["name"]: o["datatype"] for o in fraud["outputs"]} == {
        "fraud_probability": "FP64", "outcome": "BYTES", "is_fraud": "BOOL", "threshold": "FP64", "block_threshold": "FP64",
        "model_version": "BYTES", "model_role": "BYTES", "reasons": "BYTES", "principal_reasons": "BYTES", "rules": "BYTES",
        "feature_age_s": "BYTES", "stale_views": "BYTES", "error": "BYTES"}
    segment = client.get("/v2/models/segment/versions/3").json()
    assert [i["name"] for i in segment["inputs"]] == ["customer_id", "features"] and "reasons" not in {o["name"] for o in segment["outputs"]}
    assert client.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}


def test_infer_scores_each_row_through_the_family_and_answers_one_tensor_per_field(served):
    server, client = served
    response = infer(client, "churn", [ids("C1", "NOBODY", "C3")])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "churn" and body["model_version"] == "3" and body["id"] == "r1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["churn_probability"] == {"name": "churn_probability", "datatype": "FP64", "shape": [3], "data": [0.25, None, 0.25]}
    assert outputs["risk_level"]["data"] == ["medium", "", "medium"]
    assert outputs["error"]["data"] == ["", "unknown_customer", ""]
    assert outputs["model_version"]["data"] == ["3", "", "3"]
    # as the JSON route gives them: the customer's stored value is not among them
    assert outputs["reasons"]["data"][0] == ('[{"feature":"days_since_last_txn","code":"ACT01","sentence":"Long ago",'
                                             '"shap_value":0.5,"direction":"increases risk"}]')
    assert outputs["principal_reasons"]["data"] == ["[]", "", "[]"]  # a medium risk is not adverse
    assert [r["customer_id"] for r in server.families["churn"].handed] == ["C1", "NOBODY", "C3"]


def test_fraud_rows_carry_their_transaction_as_the_json_route_builds_it(served):
    server, client = served
    tensors = [ids("C1", "C2")] + [
        {"name": name, "datatype": "FP32" if name == "amount" else "BYTES", "shape": [2], "data": [value, value]}
        for name, value in TRANSACTION.items()]
    response = infer(client, "fraud", tensors, version="3")
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["outcome"] == ["review", "review"] and outputs["is_fraud"] == [True, True] and outputs["threshold"] == [0.5, 0.5]
    assert json.loads(outputs["rules"][0]) == [{"rule": "large-amount", "code": "RUL04", "outcome": "review", "sentence": "Above the limit"}]
    handed = server.families["fraud"].handed[0]
    assert handed["pin"] == "3" and handed["request_data"] == {
        "amount": 39.32, "merchant_category": "groceries", "channel": "pos", "country": "GB", "device_id": "D0000001-0",
        "transaction_time": 1792072609}


def features(*rows: list[float]) -> dict:
    return {"name": "features", "datatype": "FP32", "shape": [len(rows), len(rows[0])], "data": [x for r in rows for x in r]}


def test_a_feature_tensor_hands_each_row_its_whole_vector_by_name_in_the_order_the_metadata_gives(served):
    server, client = served
    [described] = [i for i in client.get("/v2/models/churn").json()["inputs"] if i["name"] == "features"]
    assert described == {"name": "features", "datatype": "FP32", "shape": [-1, 3],
                         "parameters": {"optional": True, "feature_names": LAYOUT}}
    response = infer(client, "churn", [ids("PROSPECT1", "C2"), features([1.0, 20.5, 3.0], [4.0, 5.0, 6.0])])
    assert response.status_code == 200, response.text
    handed = server.families["churn"].handed
    assert [h["features"] for h in handed] == [dict(zip(LAYOUT, [1.0, 20.5, 3.0])), dict(zip(LAYOUT, [4.0, 5.0, 6.0]))]
    assert [h["pin"] for h in handed] == [None, None]  # one layout: the canary split applies


def test_during_a_canary_whose_versions_read_different_features_a_vector_goes_to_the_version_whose_order_it_is(served):
    server, client = served
    family = server.families["churn"]
    family.versions.live.scorers["challenger"] = version("4", LAYOUT[:2])
    assert client.get("/v2/models/churn").json()["versions"] == ["3", "4"]
    [by_id, champion, challenger] = [infer(client, "churn", [ids("C1")]), infer(client, "churn", [ids("C1"), features([1.0, 2.0, 3.0])]),
                                     infer(client, "churn", [ids("C1"), features([1.0, 2.0])], version="4")]
    assert by_id.status_code == champion.status_code == 200, champion.text
    assert [h["pin"] for h in family.handed[:2]] == [None, "champion"]
    [described] = [i for i in client.get("/v2/models/churn/versions/4").json()["inputs"] if i["name"] == "features"]
    assert described["parameters"]["feature_names"] == LAYOUT[:2]
    assert challenger.status_code == 200 and family.handed[2]["features"] == dict(zip(LAYOUT[:2], [1.0, 2.0]))


@pytest.mark.parametrize(("tensor", "says"), [
    (features([1.0, 2.0]), "shape must be [N, 3]"),
    ({**features([1.0, 2.0, 3.0]), "shape": [3]}, "shape must be [N, 3]"),
    ({**features([1.0, 2.0, 3.0]), "data": [1.0, 2.0]}, "must hold 3 values"),
    ({**features([1.0, 2.0, 3.0]), "datatype": "BYTES", "data": ["a", "b", "c"]}, "datatype must be numeric"),
    (features([1.0, True, 3.0]), "must be finite numbers"),
    (features([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), "do not have the 1 rows"),
])
def test_a_malformed_feature_tensor_is_a_400_naming_it(served, tensor, says):
    _, client = served
    response = infer(client, "churn", [ids("C1"), tensor])
    assert response.status_code == 400 and says in response.json()["error"] and "features" in response.text, response.text


def test_a_feature_that_is_not_finite_is_refused(served):
    """JSON as Python reads it takes NaN and Infinity: the tensor is checked, not trusted."""
    _, client = served
    body = b'{"inputs": [{"name": "customer_id", "datatype": "BYTES", "shape": [1], "data": ["C1"]}, ' \
           b'{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1.0, NaN, Infinity]}]}'
    response = client.post("/v2/models/churn/infer", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "finite" in response.json()["error"]


@pytest.mark.parametrize(("inputs", "status", "says"), [
    ([{"name": "customer_id", "datatype": "FP32", "shape": [1], "data": [1.0]}], 400, "'customer_id': datatype must be BYTES"),
    ([{"name": "customer_id", "datatype": "BYTES", "shape": [2], "data": ["C1"]}], 400, "'customer_id': data must hold 2"),
    ([{"name": "customer_id", "datatype": "BYTES", "shape": [1, 2], "data": ["C1", "C2"]}], 400, "shape must be [N]"),
    ([{"name": "customers", "datatype": "BYTES", "shape": [1], "data": ["C1"]}], 400, "'customers' is not an input"),
    ([{"name": "customer_id", "datatype": "BYTES", "shape": [1], "data": ["bad id!"]}], 400, "'customer_id', row 0"),
    ([], 400, "needs `inputs`"),
])
def test_a_malformed_request_is_a_400_naming_the_input_in_the_protocols_error_shape(served, inputs, status, says):
    _, client = served
    response = infer(client, "churn", inputs)
    assert response.status_code == status and says in response.json()["error"], response.text
    assert set(response.json()) == {"error"}


def test_a_fraud_row_without_its_transaction_or_with_a_bad_field_names_it(served):
    _, client = served
    assert "needs the input(s) amount" in infer(client, "fraud", [ids("C1")]).json()["error"]
    tensors = [ids("C1")] + [{"name": name, "datatype": "FP64" if name == "amount" else "BYTES", "shape": [1],
                              "data": [-5.0 if name == "amount" else value]} for name, value in TRANSACTION.items()]
    response = infer(client, "fraud", tensors)
    assert response.status_code == 400 and "input 'amount', row 0" in response.json()["error"]


def test_an_unknown_model_or_version_is_a_404_in_the_protocols_error_shape(served):
    _, client = served
    assert infer(client, "loans", [ids("C1")]).status_code == 404
    assert "not served here" in client.get("/v2/models/loans").json()["error"]
    assert client.get("/v2/models/churn/versions/9/ready").status_code == 404
    missing = infer(client, "churn", [ids("C1")], version="9")
    assert missing.status_code == 404 and missing.json() == {"error": "model 'churn' has no version '9' served here; served: 3"}


def test_a_body_that_is_not_json_is_a_400(served):
    _, client = served
    response = client.post("/v2/models/churn/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not JSON" in response.json()["error"]


def binary_request(tensors: list[tuple[str, str, list, list[int]]]) -> tuple[bytes, dict]:
    """A body in the binary tensor extension's form, as Triton's and KServe's clients send by default."""
    from bentos.oip import raw_contents

    raws = [raw_contents(kind, values) for _, kind, values, _ in tensors]
    header = json.dumps({"inputs": [{"name": name, "datatype": kind, "shape": shape, "parameters": {"binary_data_size": len(raw)}}
                                    for (name, kind, _, shape), raw in zip(tensors, raws)]}).encode()
    return header + b"".join(raws), {"inference-header-content-length": str(len(header)), "content-type": "application/octet-stream"}


def test_tensors_in_the_binary_extension_are_read_as_their_json_form(served):
    server, client = served
    body, headers = binary_request([("customer_id", "BYTES", ["C1", "C2"], [2]),
                                    ("features", "FP32", [1.0, 20.5, 3.0, 4.0, 5.0, 6.0], [2, 3])])
    response = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    handed = server.families["churn"].handed
    assert [h["customer_id"] for h in handed] == ["C1", "C2"] and handed[0]["features"] == dict(zip(LAYOUT, [1.0, 20.5, 3.0]))


@pytest.mark.parametrize(("change", "says"), [
    (lambda body, headers: (body, {**headers, "inference-header-content-length": "99999"}), "length of the body's JSON part"),
    (lambda body, headers: (body + b"\x00", headers), "1 bytes after the JSON belong to no input"),
    (lambda body, headers: (body[:-1], headers), "more than the"),
])
def test_a_binary_body_that_does_not_add_up_is_a_400_saying_why(served, change, says):
    _, client = served
    body, headers = change(*binary_request([("customer_id", "BYTES", ["C1"], [1])]))
    response = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 400 and says in response.json()["error"], response.text


@pytest.mark.parametrize("name", ["churn", "fraud", "segment"])
def test_one_scored_rows_answer_is_written_byte_for_byte_as_the_general_answer_encodes(served, name):
    from pydantic_core import to_json

    from bentos.oip import Model
    from bentos.routes import ROUTES

    server, _ = served
    model = Model(next(r for r in ROUTES if r.family == name and r.handler == "score"))
    result = asyncio.run(server.families[name].score({"customer_id": "C1", "pin": None}))
    head = {"model_name": name, "model_version": "3", "id": 'quote " and \\ back'}
    assert model.one_row(head, result) == to_json({**head, "outputs": model.answer([result])})


def test_a_request_naming_its_outputs_gets_those_in_its_order_and_an_unknown_one_is_a_400(served):
    _, client = served
    asked = {"id": "r2", "inputs": [ids("C1", "C2")], "outputs": [{"name": "risk_level"}, {"name": "churn_probability"}]}
    response = client.post("/v2/models/churn/infer", json=asked)
    assert response.status_code == 200, response.text
    assert [(o["name"], o["data"]) for o in response.json()["outputs"]] == [("risk_level", ["medium", "medium"]),
                                                                           ("churn_probability", [0.25, 0.25])]
    unknown = client.post("/v2/models/churn/infer", json={**asked, "outputs": [{"name": "segment_id"}]})
    assert unknown.status_code == 400 and "'segment_id'" in unknown.json()["error"]
    assert client.post("/v2/models/churn/infer", json={**asked, "outputs": "all"}).status_code == 400
