"""The scoring routes' fast path (bentos/fastpath.py) answers exactly as the FastAPI routes do:
the same status, body and headers for good requests and bad ones, and it hands everything it does
not take whole to the FastAPI app."""

import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from bentos.api import create_app
from bentos.config import API_PREFIX, ServingSettings
from bentos.family import Server
from bentos.fastpath import FastPath
from bentos.routes import ROUTES
from scoring.base import FEATURES_KEY, UNKNOWN_VERSION, ModelInfo, StoreUnavailable
from scoring.fraud import FraudScorer
from tests.unit.test_scoring import FakeReader, booster, churn  # noqa: F401 (fixtures)

TRANSACTION = {"amount": 120.5, "merchant_category": "groceries", "channel": "online", "country": "GB", "device_id": "d1"}
SEGMENT = {"segment_id": 2, "segment_name": "steady savers", "feature_sources": {"request": [], "default": ["spend_30d"]},
           "model": {"name": "segment", "version": "4", "role": "champion", "feature_service": "segment_v1"}}


class Family:
    """Answers like a family of this process: a real scorer over the fake reader, pins included."""

    def __init__(self, score, scorer):
        self.score_one, self.asked = score, []
        self.versions = SimpleNamespace(live=SimpleNamespace(scorers={"champion": scorer}))  # what the protocol describes

    async def score(self, request):
        self.asked.append(request)
        if request["pin"] not in (None, "champion"):
            return {"customer_id": request["customer_id"], "error": UNKNOWN_VERSION, "detail": f"no version {request['pin']!r}"}
        if request["customer_id"] == "DOWN":
            raise StoreUnavailable("the online store (redis at 10.0.0.9:6379) did not answer: ConnectionError: refused")
        return self.score_one(request)


@pytest.fixture
def server(churn, booster):  # noqa: F811
    fraud = FraudScorer(booster, {"features": churn.features, "threshold": 0.5}, ModelInfo("fraud", "2", "champion", "fraud_v1"),
                        FakeReader(), top_n=2)
    server = Server(ServingSettings(store_retry_s=2))
    segment = SimpleNamespace(info=SimpleNamespace(version="4"), features=["spend_30d"])
    server.families = {
        "churn": Family(lambda r: churn.score([r], keep_features=True)[0], churn),
        "fraud": Family(lambda r: fraud.score([r], keep_features=True)[0], fraud),
        "segment": Family(lambda r: {"customer_id": r["customer_id"], **SEGMENT} if r["customer_id"] in "AB" else
                          {"customer_id": r["customer_id"], "error": "unknown_customer", "model": SEGMENT["model"]}, segment),
    }
    return server


class Counted:
    """The FastAPI app, counting the requests that reach it."""

    def __init__(self, app):
        self.app, self.calls = app, 0

    async def __call__(self, scope, receive, send):
        self.calls += scope["type"] == "http"
        await self.app(scope, receive, send)


def exchange(client: TestClient, route: str, **request) -> tuple:
    response = client.post(f"{API_PREFIX}/{route}", **request)
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")}
    request_id = response.headers.get("x-request-id")
    echoed = request_id if request_id == request.get("headers", {}).get("x-request-id") else (request_id and len(request_id))
    return response.status_code, response.content, headers, echoed


GOOD = [
    ("churn-score", {"json": {"customer_id": "A"}}),
    ("churn-score", {"json": {"customer_id": "B", "features": {"days_since_last_txn": 3}}}),
    ("churn-score", {"json": {"customer_id": "A"}, "headers": {"x-request-id": "batch-7:row.12", "x-model-version": "champion"}}),
    ("churn-score", {"content": b'{"customer_id": "A"}', "headers": {"content-type": "application/json; charset=utf-8"}}),
    ("churn-score", {"json": {"customer_id": "NOBODY"}}),  # 404
    ("churn-score", {"json": {"customer_id": "A"}, "headers": {"x-model-version": "9"}}),  # 422 unknown version
    ("churn-score", {"json": {"customer_id": "A", "features": {"no_such_feature": 1}}}),  # 422 invalid feature
    ("churn-score", {"json": {"customer_id": "DOWN"}}),  # 503 with Retry-After
    ("fraud-detection", {"json": {"customer_id": "A", "transaction": TRANSACTION}}),
    ("fraud-detection", {"json": {"customer_id": "B", "transaction": {**TRANSACTION, "timestamp": "2026-11-30T10:00:00"}}}),
    ("segment", {"json": {"customer_id": "B"}}),
    ("segment", {"json": {"customer_id": "Z"}}),  # 404
]
LEFT_TO_FASTAPI = [
    ("churn-score", {"content": b'{"customer_id": "A"', "headers": {"content-type": "application/json"}}),
    ("churn-score", {"content": b'{"customer_id": "\xff\xfe"}', "headers": {"content-type": "application/json"}}),
    ("churn-score", {"content": b"[" * 5000, "headers": {"content-type": "application/json"}}),
    ("churn-score", {"content": b"", "headers": {"content-type": "application/json"}}),
    ("churn-score", {"json": []}),
    ("churn-score", {"json": {"customer_id": 7}}),
    ("churn-score", {"json": {"customer_id": "A", "extra": 1}}),
    ("churn-score", {"json": {"customer_id": "A", "features": {"spend_30d": "NaN"}}}),
    ("churn-score", {"json": {}}),
    ("churn-score", {"content": b'{"customer_id": "A"}', "headers": {"content-type": "text/plain"}}),
    ("churn-score", {"content": b'{"customer_id": "A"}', "headers": {"content-type": "application/vnd.bank+json"}}),
    ("churn-score", {"json": {"customer_id": "A"}, "headers": {"x-request-id": "has space"}}),
    ("churn-score", {"json": {"customer_id": "A"}, "headers": {"x-request-id": "r" * 65}}),
    ("churn-score", {"json": {"customer_id": "A"}, "headers": {"x-model-version": "v" * 33}}),
    ("churn-score", {"json": {"customer_id": "C" * 2000}}),  # over the 1,000-byte limit below: 413
    ("fraud-detection", {"json": {"customer_id": "A", "transaction": {**TRANSACTION, "amount": -1}}}),
    ("fraud-detection", {"json": {"customer_id": "A", "transaction": {**TRANSACTION, "country": "gb"}}}),
    ("segment", {"json": {"customer_id": ""}}),
]


@pytest.mark.parametrize(("route", "request_"), GOOD + LEFT_TO_FASTAPI)
def test_the_fast_path_answers_as_the_fastapi_route_does(server, route, request_):
    server.serving = server.serving.model_copy(update={"max_body_bytes": 1000})
    assert exchange(TestClient(FastPath(create_app(server), server)), route, **request_) == \
        exchange(TestClient(create_app(server)), route, **request_)


@pytest.mark.parametrize(("route", "request_", "taken"), [(*r, True) for r in GOOD] + [(*r, False) for r in LEFT_TO_FASTAPI])
def test_a_well_formed_request_is_answered_by_the_fast_path_and_any_other_by_fastapi(server, route, request_, taken):
    server.serving = server.serving.model_copy(update={"max_body_bytes": 1000})
    app = Counted(create_app(server))
    TestClient(FastPath(app, server)).post(f"{API_PREFIX}/{route}", **request_)
    assert app.calls == (0 if taken else 1)


def test_a_body_sent_in_pieces_is_read_whole_and_scored(server):
    def pieces():
        yield from (b'{"customer_', b'id": ', b'"A"}')

    client = TestClient(FastPath(create_app(server), server))
    response = client.post(f"{API_PREFIX}/churn-score", content=pieces(), headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json()["customer_id"] == "A"


def test_the_family_is_asked_with_the_callers_id_pin_and_request_id(server):
    client = TestClient(FastPath(create_app(server), server))
    client.post(f"{API_PREFIX}/churn-score", json={"customer_id": "A"}, headers={"x-request-id": "r-1", "x-model-version": "champion"})
    client.post(f"{API_PREFIX}/fraud-detection", json={"customer_id": "A", "transaction": {**TRANSACTION, "timestamp": "2026-11-30T10:00:00Z"}})
    churn_asked, fraud_asked = server.families["churn"].asked[0], server.families["fraud"].asked[0]
    assert churn_asked == {"customer_id": "A", "features": None, "pin": "champion", "request_id": "r-1", "client_id": ""}
    assert fraud_asked["request_data"] == {**TRANSACTION, "transaction_time": 1796032800} and len(fraud_asked["request_id"]) == 32


def test_a_process_serving_one_family_takes_only_its_routes(server):
    server.serving = server.serving.model_copy(update={"families": "fraud"})
    app = Counted(create_app(server))
    client = TestClient(FastPath(app, server))
    assert client.post(f"{API_PREFIX}/churn-score", json={"customer_id": "A"}).status_code == 404 and app.calls == 1
    assert client.post(f"{API_PREFIX}/fraud-detection", json={"customer_id": "A", "transaction": TRANSACTION}).status_code == 200
    assert app.calls == 1


@pytest.mark.parametrize("route", [r for r in ROUTES if r.handler == "score"], ids=lambda r: r.path)
def test_each_answer_is_byte_for_byte_what_the_response_model_makes_of_the_result(server, route):
    """The fast path builds its bodies without validating them again (bentos/fastpath.py)."""
    import asyncio

    from pydantic_core import to_json

    body = {"customer_id": "B", "features": {"spend_30d": 5.5}} if route.body.__name__ == "CustomerRequest" else \
        {"customer_id": "B", "transaction": TRANSACTION}
    request = route.request(route.body.model_validate(body), None, {"request_id": "r", "client_id": ""})
    result = asyncio.run(server.families[route.family].score(request))
    adapter = TypeAdapter(route.response)
    if route.family != "segment":
        assert FEATURES_KEY in result and any(r["feature_value"] is None for r in result["reasons"]) is False
        result["reasons"][0]["feature_value"] = None  # a default the store had no value for
    assert to_json(route.answer(result)) == adapter.dump_json(adapter.validate_python(result), by_alias=True)
    assert json.loads(to_json(route.answer(result)))["customer_id"] == "B"


def ids(*customers: str) -> dict:
    return {"name": "customer_id", "datatype": "BYTES", "shape": [len(customers)], "data": list(customers)}


BINARY_HEADER = json.dumps({"inputs": [{**ids("A"), "data": None, "parameters": {"binary_data_size": 5}}]}).encode()
# (path under /v2/models, request, answered by the fast path)
PROTOCOL = [
    ("churn/infer", {"json": {"inputs": [ids("A", "B", "NOBODY")]}}, True),
    ("churn/infer", {"json": {"id": "mine", "inputs": [ids("A")]}, "headers": {"x-request-id": "r-2"}}, True),
    ("churn/versions/3/infer", {"json": {"inputs": [ids("A")]}}, True),
    ("churn/versions/9/infer", {"json": {"inputs": [ids("A")]}}, True),  # 404
    ("fraud/infer", {"json": {"inputs": [ids("A"), *({"name": k, "datatype": "FP64" if k == "amount" else "BYTES", "shape": [1],
                                                        "data": [v]} for k, v in TRANSACTION.items())]}}, True),
    ("segment/infer", {"json": {"inputs": [ids("B", "Z")]}}, True),
    ("churn/infer", {"json": {"inputs": [ids("DOWN")]}}, True),  # 503 with Retry-After
    ("churn/infer", {"content": b"{not json", "headers": {"content-type": "application/json"}}, True),  # 400
    ("churn/infer", {"json": {"inputs": [{**ids("A"), "datatype": "FP32"}]}}, True),  # 400 naming the input
    ("churn/infer", {"content": BINARY_HEADER + b"\x01\x00\x00\x00A",
                     "headers": {"inference-header-content-length": str(len(BINARY_HEADER))}}, True),
    ("loans/infer", {"json": {"inputs": [ids("A")]}}, False),  # 404: no such model here
    ("churn/infer", {"json": {"inputs": [ids("A")]}, "headers": {"x-request-id": "has space"}}, False),  # 422
    ("churn/infer", {"json": {"inputs": [ids("C" * 2000)]}}, False),  # 413
]


def protocol_exchange(client: TestClient, path: str, **request) -> tuple:
    response = client.post(f"/v2/models/{path}", **request)
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")}
    body = response.json()
    if "id" in body and body["id"] == response.headers.get("x-request-id"):  # a new id each time, the same in both
        body["id"] = "the request's id"
    return response.status_code, body, headers, request.get("headers", {}).get("x-request-id") == response.headers.get("x-request-id")


@pytest.mark.parametrize(("path", "request_", "taken"), PROTOCOL)
def test_the_fast_path_answers_the_protocols_infer_as_its_rest_route_does(server, path, request_, taken):
    server.serving = server.serving.model_copy(update={"max_body_bytes": 1000})
    app = Counted(create_app(server))
    fast = protocol_exchange(TestClient(FastPath(app, server)), path, **request_)
    assert fast == protocol_exchange(TestClient(create_app(server)), path, **request_)
    assert app.calls == (0 if taken else 1)


ID_A = {"name": "customer_id", "datatype": "BYTES", "shape": [1], "data": ["A"]}
# bodies a fuzzer found, or would: each is the client's fault, answered 400 naming what is wrong
HOSTILE_PROTOCOL_BODIES = {
    "a name that is a list": ({"inputs": [{**ID_A, "name": ["customer_id"]}]}, "must be an object with a `name`"),
    "a datatype that is a list": ({"inputs": [{**ID_A, "datatype": ["BYTES"]}]}, "datatype must be BYTES"),
    "parameters that are a list": ({"inputs": [{**ID_A, "parameters": []}]}, None),  # no binary data: read as JSON, scored
    "a binary size that is a list": ({"inputs": [{**ID_A, "parameters": {"binary_data_size": [1]}}]}, "binary_data_size [1]"),
    "an id that is a list": ({"id": ["r"], "inputs": [ID_A]}, "`id` must be a string"),
    "features with a datatype list": ({"inputs": [ID_A, {"name": "features", "datatype": ["FP32"], "shape": [1, 3],
                                                         "data": [1, 2, 3]}]}, "datatype must be numeric"),
    "features nested unevenly": ({"inputs": [ID_A, {"name": "features", "datatype": "FP32", "shape": [1, 3],
                                                    "data": [[1], 2, 3]}]}, "finite numbers"),
    "an integer too large for a float": ({"inputs": [ID_A, {"name": "features", "datatype": "INT64", "shape": [1, 3],
                                                            "data": [10**400, 2, 3]}]}, "finite numbers"),
}


@pytest.mark.parametrize("case", HOSTILE_PROTOCOL_BODIES)
def test_a_hostile_protocol_body_is_a_400_naming_the_problem_on_both_paths(server, case):
    body, says = HOSTILE_PROTOCOL_BODIES[case]
    for app in (FastPath(create_app(server), server), create_app(server)):
        response = TestClient(app, raise_server_exceptions=False).post("/v2/models/churn/infer", content=json.dumps(body),
                                                                       headers={"content-type": "application/json"})
        if says is None:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 400 and says in response.json()["error"], response.text


def test_a_protocol_body_nested_past_the_json_parser_is_a_400():
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    server = Server(ServingSettings(families="churn", max_body_bytes=1_000_000))
    server.families = {"churn": Family(lambda r: {}, SimpleNamespace(info=SimpleNamespace(version="3"), features=["a"]))}
    for app in (FastPath(create_app(server), server), create_app(server)):
        response = TestClient(app, raise_server_exceptions=False).post("/v2/models/churn/infer", content=body,
                                                                       headers={"content-type": "application/json"})
        assert response.status_code == 400 and "not JSON" in response.json()["error"], response.text


def test_a_fault_of_ours_on_the_protocols_fast_path_is_a_503_at_once_not_a_request_left_unanswered(server, monkeypatch):
    """An exception out of the middleware would leave BentoML's timeout waiting its 10 s, then a 500."""
    def broken(*_):
        raise AttributeError("a bug")

    monkeypatch.setattr("bentos.fastpath.infer_body", broken)
    response = TestClient(FastPath(create_app(server), server), raise_server_exceptions=False).post(
        "/v2/models/churn/infer", json={"inputs": [ID_A]})
    assert response.status_code == 503 and response.json()["error"] == "scoring_failed"
