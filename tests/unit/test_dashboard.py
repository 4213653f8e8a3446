"""The dashboard's own logic, with nothing running: search, the retention table, the service
client's errors, and every page telling what is missing instead of failing."""

import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.feature_sets import CHURN_FEATURES
from dashboard import retention, sources
from dashboard.client import Refused, ServiceClient, ServiceDown
from loadtests.servers import free_port

PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "pages"
CUSTOMERS = pd.DataFrame({"customer_id": ["C120", "C12", "C1200", "D7"]})


def test_search_puts_the_exact_id_first_then_ids_that_contain_it():
    assert sources.find_customers(CUSTOMERS, " c12")["customer_id"].tolist() == ["C12", "C120", "C1200"]
    assert sources.find_customers(CUSTOMERS, "20")["customer_id"].tolist() == ["C120", "C1200"]
    assert sources.find_customers(CUSTOMERS, "X9").empty and sources.find_customers(CUSTOMERS, "  ").empty


def test_every_churn_feature_has_a_retention_action():
    unmatched = [f for f in CHURN_FEATURES if retention.action_for(f) == retention.DEFAULT]
    assert unmatched == []
    assert retention.action_for("days_since_last_txn")[0] == "Quiet for longer than usual"
    assert retention.action_for("no_such_feature") == retention.DEFAULT


def test_requests_are_summed_per_route_over_versions():
    summary = {"routes": [
        {"route": "churn-score", "requests": 90, "client_errors": 5, "server_errors": 1, "latency_p99_ms": 7.0},
        {"route": "churn-score", "requests": 10, "client_errors": 0, "server_errors": 1, "latency_p99_ms": 9.0},
        {"route": "segment", "requests": 0, "client_errors": 0, "server_errors": 0, "latency_p99_ms": None}]}
    table = sources.requests_by_route(summary).set_index("route")
    assert table.loc["churn-score", ["requests", "client_errors", "server_errors", "latency_p99_ms"]].tolist() == [100, 5, 2, 9.0]
    assert table.loc["churn-score", "error_rate"] == pytest.approx(0.02)
    assert pd.isna(table.loc["segment", "error_rate"])
    assert sources.requests_by_route({"routes": []}).empty


def client_answering(status: int, body: dict) -> ServiceClient:
    return ServiceClient("http://service", {}, 5, transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body)))


def test_the_client_names_what_went_wrong():
    with pytest.raises(Refused) as refused:
        client_answering(404, {"error": "unknown_customer", "detail": "no features for NOBODY"}).churn_score("NOBODY")
    assert refused.value.error == "unknown_customer" and "NOBODY" in refused.value.detail
    with pytest.raises(ServiceDown, match="credential"):
        client_answering(401, {"error": "unauthorized"}).churn_score("C1")
    with pytest.raises(ServiceDown, match="failed \\(500\\)"):
        client_answering(500, {"detail": "boom"}).segment("C1")
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceDown, match=f"{url} is not answering"):
        ServiceClient(url, {}, 2).status()


@pytest.mark.parametrize("page", sorted(p.stem for p in PAGES.glob("*.py")))
def test_a_page_with_nothing_running_says_what_is_missing(page, tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SERVICE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    app = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=60)
    if page == "customer":
        app.run()
        app.text_input(key="customer_query").input("C0000001")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    said = " ".join(m.value for m in [*app.error, *app.info, *app.warning])
    assert said, "the page said nothing about the missing sources"
    assert "Traceback" not in said
    if page in ("churn", "overview"):
        assert "is not answering" in said or "make features" in said
    if page in ("fraud", "segments", "performance"):
        assert "no registry" in said and "make train" in said


def test_the_dashboard_and_the_rollout_cli_load_no_model_code():
    """Importing every dashboard module (and what the pages import) and the rollout CLI brings in no
    model library or serving code: each score comes from the service. Nor does MLflow's first
    request, which loads its request-header plugins (Feast registers one)."""
    modules = ["dashboard.ui", "dashboard.sources", "dashboard.client", "dashboard.retention", "shap", "matplotlib.pyplot",
               "rollout.promotion", "rollout.settings", "rollout.cli"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "from core.registry import mlflow_client; mlflow_client('sqlite:///:memory:')\n"
            "from mlflow.tracking.request_header.registry import resolve_request_headers; resolve_request_headers()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'xgboost', 'bentos', 'bentoml', 'training', 'feast'}"
            " or m in {'mlflow.pyfunc', 'mlflow.xgboost', 'mlflow.sklearn'}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_each_family_is_asked_at_the_service_that_answers_it():
    """The prod overlay runs each family as its own service: scores, status and request counts come from each."""
    asked = []

    def answer(request: httpx.Request) -> httpx.Response:
        host, path = request.url.host, request.url.path
        asked.append((host, path))
        if path == "/models/status":
            return httpx.Response(200, json={family: {"versions": [], "host": host} for family in ("churn", "fraud", "segment")})
        return httpx.Response(200, json={"routes": [{"route": host}]})

    urls = {"churn": "http://serving-churn", "fraud": "http://serving-fraud/"}
    client = ServiceClient("http://serving", {}, 5, urls, transport=httpx.MockTransport(answer))
    client.segment("C1"), client.fraud("C1", {}), client.explain()
    assert asked == [("serving", "/api/v1/inference/segment"), ("serving-fraud", "/api/v1/inference/fraud-detection"),
                     ("serving-churn", "/api/v1/inference/explain")]
    status = client.status()
    assert {family: state["host"] for family, state in status.items()} == {
        "churn": "serving-churn", "fraud": "serving-fraud", "segment": "serving"}
    assert sorted(r["route"] for r in client.request_summary()["routes"]) == ["serving", "serving-churn", "serving-fraud"]
