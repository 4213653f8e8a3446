"""The public routes, without models: the OpenAPI document stays as published, and a process
serves only the families it is given."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bentos.admission import Admission
from bentos.api import create_app
from bentos.config import API_PREFIX, ServingSettings
from bentos.family import Server

PUBLISHED = Path(__file__).with_name("openapi.json")
ROUTE_OF = {"churn": "churn-score", "fraud": "fraud-detection", "segment": "segment"}


def test_the_openapi_document_is_the_published_one():
    """Paths, bodies, parameters, headers and responses: a change here is a change for every client."""
    document = json.loads(json.dumps(create_app(Server(ServingSettings())).openapi(), sort_keys=True))
    assert document == json.loads(PUBLISHED.read_text())


@pytest.mark.parametrize("family", ["churn", "fraud", "segment"])
def test_a_process_given_one_family_answers_404_on_the_others_routes(family):
    client = TestClient(create_app(Server(ServingSettings(families=family))))
    for other, route in ROUTE_OF.items():
        response = client.post(f"{API_PREFIX}/{route}", json={})
        # its own route exists and rejects the empty body; the others' do not exist
        assert response.status_code == (422 if other == family else 404), (family, route)
    assert (client.get(f"{API_PREFIX}/explain").status_code == 404) == (family != "churn")


def test_an_unknown_family_is_refused_with_its_name():
    with pytest.raises(ValueError, match="loans"):
        ServingSettings(families="churn,loans")


class StoreDown:
    """A family whose feature store does not answer."""

    async def score(self, request):
        from bentos.online import StoreUnavailable

        raise StoreUnavailable("the online store (redis at 10.0.0.9:6379) did not answer: ConnectionError: refused")


def test_a_store_that_does_not_answer_is_a_503_with_a_stable_code_and_retry_after_and_no_internals(caplog):
    server = Server(ServingSettings(families="churn", store_retry_s=2.5))
    server.families = {"churn": StoreDown()}
    response = TestClient(create_app(server)).post(f"{API_PREFIX}/churn-score", json={"customer_id": "C0000001"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "3"
    assert response.json()["error"] == "store_unavailable" and "feature store" in response.json()["detail"]
    assert "10.0.0.9" not in response.text and "redis at 10.0.0.9:6379" in caplog.text  # the detail is the log's


class Broken:
    """A family whose scoring, readiness and status carry internals: paths, addresses, table names."""

    async def score(self, request):
        raise OSError("/var/lib/fintech/model_cache/churn/v3/model.ubj: permission denied")

    def ready(self):
        raise RuntimeError("sqlite3.OperationalError: no such table fintech_customer_activity in /var/lib/fintech/online.db")

    def status(self) -> dict:
        return {"versions": [], "registry_error": "ConnectionError: http://fintech-mlflow:5000/api/2.0 refused",
                "refused_versions": {"3": "/var/lib/fintech/model_cache/churn/v3: checksum differs"},
                "inference_log": {"backlog_rows": 0, "dropped_rows": 0, "write_error": "PermissionError: /var/lib/fintech/inference_log"}}


def with_client(app, *scopes):
    """The app as the authentication middleware hands it a request: with a client of these scopes."""
    from bentos.auth import Client

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            scope.setdefault("state", {})["client"] = Client("caller", frozenset(scopes), "api_key")
        await app(scope, receive, send)

    return wrapped


def test_no_answer_to_a_client_names_a_path_an_address_or_a_table_but_an_admins_status_does(caplog):
    server = Server(ServingSettings(families="churn"))
    server.families = {"churn": Broken()}
    client = TestClient(with_client(create_app(server), "inference"), raise_server_exceptions=False)
    answers = [client.post(f"{API_PREFIX}/churn-score", json={"customer_id": "C0000001"}), client.get("/ready"),
               client.get("/"), client.get("/models/status")]
    assert [a.status_code for a in answers] == [503, 503, 200, 200]
    for answer in answers:
        assert not any(word in answer.text for word in ("/var/lib", "fintech-mlflow", "no such table", "OSError")), answer.text
    assert answers[1].json()["checks"] == {"churn": False, "churn_error": "store_unavailable"}
    status = answers[3].json()["churn"]
    assert status["registry_error"] == "unavailable" and status["refused_versions"] == {"3": "refused"}
    assert status["inference_log"]["write_error"] == "write_failed"
    assert "/var/lib/fintech/online.db" in caplog.text and "model.ubj" in caplog.text
    admin = TestClient(with_client(create_app(server), "admin")).get("/models/status").json()["churn"]
    assert "fintech-mlflow:5000" in admin["registry_error"] and "checksum" in admin["refused_versions"]["3"]


class Held:
    """A churn family whose scoring waits until released, so requests stay in progress."""

    def __init__(self):
        import asyncio
        from types import SimpleNamespace

        self.release = asyncio.Event()
        champion = SimpleNamespace(info=SimpleNamespace(version="1"), features=["spend_30d"])
        self.versions = SimpleNamespace(live=SimpleNamespace(scorers={"champion": champion}))  # what the protocol's routes ask

    async def score(self, request):
        await self.release.wait()
        return {"customer_id": request["customer_id"], "churn_probability": 0.1, "risk_level": "low",
                "model": {"name": "churn", "version": "1", "role": "champion", "feature_service": "churn_v1"},
                "feature_sources": {"request": [], "default": []}, "reasons": []}


def test_past_its_limit_of_requests_in_progress_a_process_refuses_at_once_with_503_and_retry_after():
    import asyncio

    import httpx

    async def scenario():
        server = Server(ServingSettings(families="churn"))
        family = Held()
        server.families = {"churn": family}
        transport = httpx.ASGITransport(app=Admission(create_app(server), limit=3))  # as bentos/service.py puts it
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            def post(i):
                return client.post(f"{API_PREFIX}/churn-score", json={"customer_id": f"C{i:07d}"})

            def infer(i):  # the Open Inference Protocol's route counts the same
                return client.post("/v2/models/churn/infer", json={"inputs": [
                    {"name": "customer_id", "datatype": "BYTES", "shape": [1], "data": [f"C{i:07d}"]}]})
            held = [asyncio.create_task(post(1)), asyncio.create_task(post(2)), asyncio.create_task(infer(3))]
            await asyncio.sleep(0.05)  # the three are in progress
            refused = [await asyncio.wait_for(call(9), timeout=5) for call in (post, infer)]  # refused at once, not held
            family.release.set()
            answered = await asyncio.gather(*held)
            after = await infer(10)
        return refused, answered, after

    refused, answered, after = asyncio.run(scenario())
    for response in refused:
        assert response.status_code == 503 and response.json()["error"] == "overloaded" and response.headers["Retry-After"]
    assert [r.status_code for r in answered] == [200, 200, 200] and after.status_code == 200


def test_a_body_over_the_limit_is_a_413_naming_the_limit_whether_its_length_is_declared_or_not():
    client = TestClient(create_app(Server(ServingSettings(families="churn", max_body_bytes=1000))))
    declared = client.post(f"{API_PREFIX}/churn-score", json={"customer_id": "C" * 2000})

    def chunks():  # no Content-Length: the limit is counted as the body is read
        yield from [b'{"customer_id": "'] + [b"C" * 100] * 20 + [b'"}']

    chunked = client.post(f"{API_PREFIX}/churn-score", content=chunks(), headers={"content-type": "application/json"})
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "body_too_large" and "1,000 bytes" in response.json()["detail"]
    assert client.post(f"{API_PREFIX}/churn-score", json={"customer_id": "C" * 900}).status_code == 422  # under it: validated


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"customer_id": "\xff\xfe"}', "UTF-8"),
    (b"[" * 10_000, "too deeply"),
    (b'{"customer_id": 1' + b"0" * 5000 + b"}", "too many digits"),
])
def test_a_body_that_cannot_be_decoded_is_a_422_naming_the_problem(body, problem):
    client = TestClient(create_app(Server(ServingSettings(families="churn"))))
    response = client.post(f"{API_PREFIX}/churn-score", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == "body" and problem in response.json()["detail"]


def test_the_frameworks_own_refusals_use_the_error_body_of_the_service():
    client = TestClient(create_app(Server(ServingSettings(families="churn"))))
    assert client.get("/no-such-route").json() == {"error": "not_found", "detail": "Not Found", "fields": []}
    wrong_method = client.put(f"{API_PREFIX}/churn-score")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
    assert wrong_method.headers["Allow"] == "POST"


def test_headers_over_the_limit_are_a_431_naming_them_before_any_route():
    client = TestClient(Admission(create_app(Server(ServingSettings(families="churn"))), limit=3, max_header_bytes=2048))
    assert client.get("/health", headers={"X-Padding": "x" * 1500}).status_code == 200
    response = client.get("/health", headers={"X-Padding": "x" * 2100})
    assert response.status_code == 431 and response.json()["fields"] == [{"field": "headers", "message": "too large"}]


class Quiet:
    """A family with nothing to report and nothing to reload."""

    def status(self) -> dict:
        return {"versions": []}

    def reload(self) -> dict:
        return {"changed": False}


def test_with_auth_off_models_status_warns_on_every_family_and_stays_a_dict_of_families():
    server = Server(ServingSettings(families="churn,fraud"))
    server.families = {"churn": Quiet(), "fraud": Quiet()}
    off = TestClient(create_app(server, auth_mode="off")).get("/models/status").json()
    assert set(off) == {"churn", "fraud"} and all("AUTH_MODE=off" in f["warnings"][0] for f in off.values())
    assert "warnings" not in TestClient(create_app(server, auth_mode="on")).get("/models/status").json()["churn"]


class FellBack:
    """Rate limits on the pod's buckets since Redis stopped answering, its address in the error."""

    def status(self) -> dict:
        return {"shared": "per pod", "since": "2026-01-05T10:00:00+00:00", "error": "ConnectionError: 10.0.0.9:6379 refused"}


class Shared:
    def status(self) -> dict:
        return {"shared": "redis at 10.0.0.9:6379", "since": None, "error": None}


@pytest.mark.parametrize("limits", [FellBack(), Shared()])
def test_models_status_says_where_the_rate_limits_are_and_redis_s_address_and_error_only_to_admin(limits):
    server = Server(ServingSettings(families="churn,fraud"))
    server.families = {"churn": Quiet(), "fraud": Quiet()}

    def answer(*scopes):
        app = with_client(create_app(server), *scopes)

        async def with_limits(scope, receive, send):
            scope.setdefault("state", {})["rate_limits"] = limits
            await app(scope, receive, send)

        return TestClient(with_limits).get("/models/status").json()

    admin, reader = answer("admin"), answer("inference")
    assert set(admin) == {"churn", "fraud"} and all(f["rate_limits"] == limits.status() for f in admin.values())
    public = reader["churn"]["rate_limits"]
    assert "10.0.0.9" not in json.dumps(reader) and public["since"] == limits.status()["since"]
    assert (public["shared"], public["error"]) == (("per pod", "unavailable") if limits.status()["error"] else ("redis", None))


def test_a_reload_is_written_to_the_audit_log_with_who_asked_and_why(tmp_path, monkeypatch):
    from bentos.auth import Authenticate, AuthSettings
    from core import audit
    from core.api_keys import new_key

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    keys = tmp_path / "api_keys.json"
    ops, reader = new_key(keys, "platform-ops", ["admin"]), new_key(keys, "retention-app", ["inference"])
    server = Server(ServingSettings(families="churn"))
    server.families = {"churn": Quiet()}
    settings = AuthSettings(api_keys_file=keys, rate_limit_file=tmp_path / "limits.bin")
    client = TestClient(Authenticate(create_app(server), settings))
    assert client.get("/admin/whoami", headers={"X-API-Key": ops}).json()["client_id"] == "platform-ops"
    assert client.post("/admin/reload", headers={"X-API-Key": reader}).status_code == 403
    answer = client.post("/admin/reload", headers={"X-API-Key": ops}, json={"reason": "promote churn 3"})
    assert answer.status_code == 200 and answer.json() == {"churn": {"changed": False}}
    [record] = audit.read(tmp_path / "audit" / "admin.jsonl")  # the refused one is not an action
    assert record["action"] == "reload" and record["actor"] == "platform-ops" and record["verified"] is True
    assert record["via"] == "api_key"  # a token's client of the same name would be "token"
    assert record["details"] == {"reason": "promote churn 3", "answer": {"churn": {"changed": False}}}
    assert ops not in (tmp_path / "audit" / "admin.jsonl").read_text()


class Explained:
    """A churn family whose champion explains any customer."""

    class Scorer:
        info = type("Info", (), {"as_dict": lambda self: {"name": "churn", "version": "4", "role": "champion",
                                                          "feature_service": "churn_v1"}})()
        importance = {"spend_30d": 0.2}

        def explain(self, customer_id):
            return {"customer_id": customer_id, "kind": "shap_values", "model": self.info.as_dict(), "base_value": 0.0,
                    "values": [{"feature": "spend_30d", "shap_value": 0.2, "feature_value": 812.5}]}

    def pick(self, customer_id, pin=None):
        return self.Scorer()


def test_each_explain_call_is_recorded_with_who_asked_about_which_customer_and_when(tmp_path, monkeypatch):
    from core import audit

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    server = Server(ServingSettings(families="churn"))
    server.families = {"churn": Explained()}
    client = TestClient(with_client(create_app(server), "inference", "explain"))
    answer = client.get(f"{API_PREFIX}/explain", params={"customer_id": "C0000042"})
    assert answer.status_code == 200 and answer.json()["values"][0]["feature_value"] == 812.5
    assert client.get(f"{API_PREFIX}/explain").status_code == 200  # global importance: no customer's values
    [record] = audit.read(tmp_path / "audit" / "explain.jsonl")
    assert record["action"] == "explain" and (record["actor"], record["via"]) == ("caller", "api_key")
    assert record["details"] == {"customer_id": "C0000042", "version": "4"} and record["at"]


class Batches:
    """A churn family that scores any batch."""

    def score_batch(self, requests, reasons=True):
        return [{"customer_id": r["customer_id"], "churn_probability": 0.1, "risk_level": "low",
                 "model": {"name": "churn", "version": "1", "role": "champion", "feature_service": "churn_v1"}} for r in requests]


def test_a_batch_is_charged_a_row_per_id_against_the_clients_rows_limit(tmp_path, monkeypatch):
    from bentos.auth import Authenticate, AuthSettings
    from bentos.limits import Limit
    from core.api_keys import new_key

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    keys = tmp_path / "api_keys.json"
    key = new_key(keys, "nightly-batch", ["inference"])
    server = Server(ServingSettings(families="churn"))
    server.families = {"churn": Batches()}
    settings = AuthSettings(api_keys_file=keys, rate_limit_file=tmp_path / "limits.bin",
                            default_limits={"rows": Limit(per_s=1, burst=100)})
    client = TestClient(Authenticate(create_app(server), settings))
    batch = {"customer_ids": [f"C{i:07d}" for i in range(60)]}
    assert client.post(f"{API_PREFIX}/churn-batch", json=batch, headers={"X-API-Key": key}).status_code == 200
    over = client.post(f"{API_PREFIX}/churn-batch", json=batch, headers={"X-API-Key": key})  # 40 rows left of 100
    assert over.status_code == 429 and over.json()["error"] == "rate_limited" and "rows" in over.json()["detail"]
    assert int(over.headers["retry-after"]) >= 20  # 20 rows short at 1 row/s
    small = {"customer_ids": [f"C{i:07d}" for i in range(40)]}  # the refused batch took nothing
    assert client.post(f"{API_PREFIX}/churn-batch", json=small, headers={"X-API-Key": key}).status_code == 200
    document = client.get("/openapi.json").json()
    assert "row per id" in document["paths"][f"{API_PREFIX}/churn-batch"]["post"]["description"]
