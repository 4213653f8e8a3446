"""HTTP through the service's ASGI app, in one process, on the real models and Feast store."""

import math
import os

import pytest

from core.feature_sets import CHURN_FEATURES
from tests.integration.conftest import latest_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]
API = "/api/v1/inference"


@pytest.fixture(scope="module")
def client(settings, served_models):
    from starlette.testclient import TestClient

    previous = {name: os.environ.get(name) for name in ("DATA_DIR", "AUTH_MODE")}
    # what the service does, not who may call it (tests/unit/test_auth.py, tests/integration/test_auth.py)
    os.environ.update(DATA_DIR=str(settings.data_dir), AUTH_MODE="off")
    from bentos.service import FintechAPI

    with TestClient(FintechAPI.to_asgi()) as test_client:
        yield test_client
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def customers(table):
    return latest_rows(table, 5).index.tolist()


def test_the_bento_packs_one_model_per_family(client):
    from bentos.service import FintechAPI
    from core.families import FAMILIES

    assert sorted(model.tag.name for model in FintechAPI.models) == sorted(FAMILIES)


def test_service_routes_answer(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    status = client.get("/models/status").json()
    assert {f: status[f]["versions"][0]["role"] for f in status} == {"churn": "champion", "fraud": "champion", "segment": "champion"}
    assert client.get("/").json()["models"]["churn"]["versions"][0]["version"] == "1"


REASON = {"feature", "code", "sentence", "shap_value", "direction"}


def test_an_adverse_churn_score_gives_its_principal_reasons_in_words(client, table):
    """Customers scored high or critical get at most four principal reasons, each a catalogued
    code and sentence that raised the risk, largest first; the others none."""
    from core.reasons import catalogue

    sentences = {s for e in catalogue().entries.values() for s in (e.high, e.low)}
    batch = client.post(f"{API}/churn-batch", json={"customer_ids": latest_rows(table, 300).index.tolist()}).json()["results"]
    adverse = [r["customer_id"] for r in batch if r["risk_level"] in ("high", "critical")][:10]
    others = [r["customer_id"] for r in batch if r["risk_level"] in ("low", "medium")][:5]
    assert adverse and others
    for customer in adverse + others:
        body = client.post(f"{API}/churn-score", json={"customer_id": customer}).json()
        principal = body["principal_reasons"]
        assert (1 <= len(principal) <= 4) if customer in adverse else principal == []
        assert all(r["shap_value"] > 0 and r["sentence"] in sentences for r in principal)
        assert [r["shap_value"] for r in principal] == sorted((r["shap_value"] for r in principal), reverse=True)


def test_churn_score_names_model_risk_and_reasons(client, customers):
    body = client.post(f"{API}/churn-score", json={"customer_id": customers[0]}).json()
    assert 0 <= body["churn_probability"] <= 1
    assert body["risk_level"] in ("low", "medium", "high", "critical")
    assert body["model"] == {"name": "churn", "version": "1", "role": "champion", "feature_service": "churn_v1"}
    # a reason names the feature, its code, its sentence, its contribution and its direction; its value only explain tells
    assert len(body["reasons"]) == 5 and all(set(r) == REASON for r in body["reasons"])
    assert all(r["code"] and r["sentence"] for r in body["reasons"])
    adverse = body["risk_level"] in ("high", "critical")
    assert (len(body["principal_reasons"]) in range(1, 5)) if adverse else body["principal_reasons"] == []
    assert body["feature_sources"]["request"] == []


def test_overrides_are_used_and_reported(client, customers):
    plain = client.post(f"{API}/churn-score", json={"customer_id": customers[1]}).json()
    later = client.post(f"{API}/churn-score", json={"customer_id": customers[1], "features": {"days_since_last_txn": 120}}).json()
    assert later["feature_sources"]["request"] == ["days_since_last_txn"]
    assert later["churn_probability"] >= plain["churn_probability"]


def test_segment_fraud_and_explain(client, customers):
    segment = client.post(f"{API}/segment", json={"customer_id": customers[0]}).json()
    assert isinstance(segment["segment_id"], int) and segment["segment_name"]
    transaction = {"amount": 42.5, "merchant_category": "groceries", "channel": "pos", "country": "GB",
                   "device_id": "dev-1", "timestamp": "2026-10-01T12:00:00Z"}
    fraud = client.post(f"{API}/fraud-detection", json={"customer_id": customers[0], "transaction": transaction}).json()
    assert 0 <= fraud["fraud_probability"] <= 1 and fraud["is_fraud"] == (fraud["fraud_probability"] >= fraud["threshold"])
    p, review, block = fraud["fraud_probability"], fraud["threshold"], fraud["block_threshold"]
    assert fraud["rules"] == [] and fraud["outcome"] == ("block" if p >= block else "review" if p >= review else "accept")
    sanctioned = client.post(f"{API}/fraud-detection", json={"customer_id": customers[0],
                                                             "transaction": {**transaction, "country": "KP"}}).json()
    assert sanctioned["outcome"] == "block" and sanctioned["is_fraud"] and sanctioned["principal_reasons"]
    assert [(h["rule"], h["outcome"]) for h in sanctioned["rules"]] == [("sanctioned-country", "block")]
    assert fraud["reasons"] and all(set(r) == REASON and r["code"] and r["sentence"] for r in fraud["reasons"])
    explained = client.get(f"{API}/explain", params={"customer_id": customers[0]}).json()
    assert explained["kind"] == "shap_values" and [v["feature"] for v in explained["values"]] == CHURN_FEATURES
    overall = client.get(f"{API}/explain").json()
    assert overall["kind"] == "global_importance" and overall["mean_abs_shap"]["days_since_last_txn"] > 0


def test_explanations_add_up_to_the_score(client, customers):
    """base_value plus the SHAP values is the customer's log-odds before calibration, which only
    rescales it: the customers sort the same way by either."""
    log_odds, probabilities = [], []
    for customer in customers:
        explained = client.get(f"{API}/explain", params={"customer_id": customer}).json()
        log_odds.append(explained["base_value"] + sum(v["shap_value"] for v in explained["values"]))
        probabilities.append(client.post(f"{API}/churn-score", json={"customer_id": customer}).json()["churn_probability"])
    assert len(set(probabilities)) > 1
    assert sorted(range(len(customers)), key=log_odds.__getitem__) == sorted(range(len(customers)), key=probabilities.__getitem__)


def test_churn_batch_scores_known_and_flags_unknown(client, customers):
    body = client.post(f"{API}/churn-batch", json={"customer_ids": [*customers, "NOBODY"]}).json()
    assert body["count"] == 6 and body["unknown"] == 1
    assert body["results"][-1] == {"customer_id": "NOBODY", "churn_probability": None, "risk_level": None, "version": None,
                                   "error": "unknown_customer", "stale_views": []}
    # the session's store holds rows of the synthetic period, months older than the default limit
    assert all("customer_activity" in r["stale_views"] for r in body["results"][:-1])


@pytest.mark.parametrize(("path", "payload", "status", "field"), [
    ("churn-score", {"customer_id": "NOBODY"}, 404, "customer_id"),
    ("churn-score", {}, 422, "customer_id"),
    ("churn-score", {"customer_id": 12}, 422, "customer_id"),
    ("churn-score", {"customer_id": "x" * 10_000}, 422, "customer_id"),
    ("churn-score", {"customer_id": "C1", "features": {"days_since_last_txn": "soon"}}, 422, "features.days_since_last_txn"),
    ("churn-score", {"customer_id": "C1", "unexpected": 1}, 422, "unexpected"),
    ("churn-batch", {"customer_ids": []}, 422, "customer_ids"),
    ("churn-batch", {"customer_ids": ["C1"] * 10_001}, 413, "customer_ids"),
    ("fraud-detection", {"customer_id": "C1", "transaction": {"amount": -1, "merchant_category": "groceries", "channel": "pos",
                                                             "country": "GB", "device_id": "d"}}, 422, "transaction.amount"),
    ("fraud-detection", {"customer_id": "C1", "transaction": {"amount": 5, "merchant_category": "groceries", "channel": "pos",
                                                             "country": "Britain", "device_id": "d"}}, 422, "transaction.country"),
    ("segment", {"customer_id": "C0000001", "features": {"no_such_feature": 1.0}}, 422, "features.no_such_feature"),
])
def test_bad_input_is_a_4xx_naming_the_field(client, path, payload, status, field):
    response = client.post(f"{API}/{path}", json=payload)
    assert response.status_code == status, response.text
    assert field in [f["field"] for f in response.json()["fields"]]


def test_malformed_and_non_finite_json_are_rejected(client):
    response = client.post(f"{API}/churn-score", content=b'{"customer_id": ', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["fields"][0]["field"] == "body"
    response = client.post(f"{API}/churn-score", content=b'{"customer_id": "C1", "features": {"spend_30d": NaN}}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_metrics_summary_counts_what_was_served(client, customers):
    client.post(f"{API}/churn-score", json={"customer_id": customers[2]})
    summary = client.get(f"{API}/metrics").json()
    churn = next(r for r in summary["routes"] if r["route"] == "churn-score" and r["version"] == "1")  # 404s included
    assert churn["requests"] >= 1 and churn["role"] == "champion" and not math.isnan(churn["latency_p50_ms"])
    assert churn["client_errors"] >= 1 and churn["server_errors"] == 0


def test_openapi_documents_the_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("churn-score", "churn-batch", "segment", "fraud-detection", "explain", "metrics"):
        assert f"{API}/{route}" in paths
    assert "ChurnScore" in str(paths[f"{API}/churn-score"]["post"]["responses"]["200"])


def test_a_pin_header_chooses_the_version_and_an_unknown_one_is_named(client, customers):
    pinned = client.post(f"{API}/churn-score", json={"customer_id": customers[0]}, headers={"X-Model-Version": "champion"})
    assert pinned.status_code == 200 and pinned.json()["model"]["role"] == "champion"
    unknown = client.post(f"{API}/churn-score", json={"customer_id": customers[0]}, headers={"X-Model-Version": "99"})
    assert unknown.status_code == 422 and unknown.json()["fields"] == [{"field": "X-Model-Version", "message": "no such version is served"}]
    too_long = client.post(f"{API}/segment", json={"customer_id": customers[0]}, headers={"X-Model-Version": "9" * 40})
    assert too_long.status_code == 422 and too_long.json()["fields"][0]["field"] == "header.X-Model-Version"


def test_admin_reload_follows_the_registry(client):
    body = client.post("/admin/reload").json()
    assert set(body) == {"churn", "fraud", "segment"}
    assert all(body[f]["versions"][0]["role"] == "champion" and "error" not in body[f] for f in body)
