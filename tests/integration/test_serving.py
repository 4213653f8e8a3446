"""A real `bentoml serve` subprocess on the real models and Feast store, SQLite and Redis."""

import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import mlflow
import numpy as np
import pytest
import yaml

from loadtests.servers import ServerDidNotStart, free_port, start, stop
from tests.integration.conftest import latest_rows, start_server
from tests.k8s.test_manifests import named, render
from training import store
from training.models import churn_probability

pytestmark = [pytest.mark.integration, pytest.mark.slow]
API = "/api/v1/inference"
POD_HASH = "podhash1"


@pytest.fixture(scope="module")
def sqlite_url(shared_server):
    return shared_server.url


@pytest.fixture(scope="module")
def redis_served_url(settings, served_models, table, redis_url, tmp_path_factory):
    redis_settings = settings.model_copy(update={"online_store": "redis", "redis_url": redis_url})
    store.apply(redis_settings)
    store.materialize(store.open_store(redis_settings), table["event_timestamp"].min(), table["event_timestamp"].max())
    process, url = start_server(settings, tmp_path_factory.mktemp("serve"), ONLINE_STORE="redis", REDIS_URL=redis_url)
    yield url
    stop(process)


@pytest.fixture(scope="module")
def offline_churn(settings):
    mlflow.set_tracking_uri(settings.tracking_uri)
    info = mlflow.models.get_model_info("models:/churn@champion")
    model = mlflow.xgboost.load_model("models:/churn@champion")
    return lambda rows: churn_probability(model, info.metadata["calibration"], rows)


def churn_score(url: str, customer: str, features: dict | None = None) -> dict:
    body = {"customer_id": customer, **({"features": features} if features else {})}
    response = httpx.post(f"{url}{API}/churn-score", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_served_scores_equal_offline_scores(sqlite_url, table, offline_churn):
    rows = latest_rows(table, 20)
    served = np.array([churn_score(sqlite_url, c)["churn_probability"] for c in rows.index])
    np.testing.assert_allclose(served, offline_churn(rows), rtol=1e-6)


def test_concurrent_callers_each_get_their_own_result(sqlite_url, table, offline_churn):
    rows = latest_rows(table, 40)
    calls = [(customer, float(days)) for days in (1, 30, 90) for customer in rows.index]
    before = httpx.get(f"{sqlite_url}{API}/metrics").json()["batches"]
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(lambda call: churn_score(sqlite_url, call[0], {"days_since_last_txn": call[1]}), calls))
    for (customer, days), result in zip(calls, results):
        assert result["customer_id"] == customer and result["feature_sources"]["request"] == ["days_since_last_txn"]
        expected = offline_churn(rows.loc[[customer]].assign(days_since_last_txn=days))[0]
        assert result["churn_probability"] == pytest.approx(expected, rel=1e-6)
    after = httpx.get(f"{sqlite_url}{API}/metrics").json()["batches"]
    def churn(counts: list[dict], key: str) -> int:  # over versions: the shared server may have served several
        return sum(b[key] for b in counts if b["model"] == "churn")

    batches = churn(after, "batches") - churn(before, "batches")
    assert churn(after, "requests") - churn(before, "requests") == len(calls)
    assert batches < len(calls)  # concurrent requests were scored together


def test_real_server_routes(sqlite_url, table):
    churn_score(sqlite_url, latest_rows(table, 1).index[0])
    assert httpx.get(f"{sqlite_url}/livez").status_code == 200
    assert httpx.get(f"{sqlite_url}/readyz").status_code == 200
    fraud = httpx.get(f"{sqlite_url}/models/status").json()["fraud"]
    assert [(v["version"], v["role"]) for v in fraud["versions"]] == [("1", "champion")] and fraud["challenger_share"] == 0
    assert httpx.post(f"{sqlite_url}{API}/churn-score", json={"customer_id": "NOBODY"}).status_code == 404
    assert httpx.post(f"{sqlite_url}{API}/churn-batch", json={"customer_ids": ["C1"] * 10_001}).status_code == 413
    bad = httpx.post(f"{sqlite_url}{API}/segment", content=b"[1,", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    exposition = httpx.get(f"{sqlite_url}/metrics").text
    assert 'fintech_requests_total{model="churn",role="champion",route="churn-score",status="200",version="1"}' in exposition
    assert 'fintech_predictions_total{model="churn",outcome="ok",role="champion",version="1"}' in exposition
    assert "fintech_batch_size_bucket" in exposition and "fintech_request_latency_seconds_bucket" in exposition


def test_redis_online_store_serves_the_same_scores(redis_served_url, sqlite_url, table):
    for customer in latest_rows(table, 10).index:
        from_redis = churn_score(redis_served_url, customer)
        from_sqlite = churn_score(sqlite_url, customer)
        assert from_redis["churn_probability"] == pytest.approx(from_sqlite["churn_probability"], rel=1e-9)
        assert from_redis["reasons"] == from_sqlite["reasons"]


@pytest.fixture(scope="module")
def prometheus(sqlite_url, tmp_path_factory):
    """Debian's Prometheus, scraping the served /metrics every second on loopback."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (Debian: apt-get install prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    target = sqlite_url.removeprefix("http://")
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: fintech-serving\n"
        # the label the cluster's ServiceMonitor carries over from the pods, for the canary analysis
        f"    static_configs: [{{targets: ['{target}'], labels: {{rollouts_pod_template_hash: {POD_HASH}}}}}]\n")
    port = free_port()
    command = [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}"]
    try:
        process = start(command, port, "/-/ready", folder / "prometheus.log", {})
    except ServerDidNotStart as e:
        pytest.fail(str(e))
    yield f"http://127.0.0.1:{port}"
    stop(process)


def test_a_real_prometheus_scrapes_the_service_with_its_labels(prometheus, sqlite_url, table):
    customer = latest_rows(table, 1).index[0]
    churn_score(sqlite_url, customer)
    query = 'fintech_predictions_total{job="fintech-serving",model="churn",outcome="ok"}'
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}).json()["data"]["result"]
        if found:
            break
        time.sleep(1)
    assert found, f"Prometheus never saw {query}"
    # the shared server follows the session's registry: other modules' challengers have series too
    served = {(r["metric"]["version"], r["metric"]["role"]): float(r["value"][1]) for r in found}
    assert served.get(("1", "champion"), 0) >= 1, served
    requests = httpx.get(f"{prometheus}/api/v1/query", params={
        "query": 'sum by (route, role) (fintech_requests_total{route="churn-score",status="200"})'}).json()["data"]["result"]
    assert {"route": "churn-score", "role": "champion"} in [r["metric"] for r in requests], requests
    ages = httpx.get(f"{prometheus}/api/v1/query", params={
        "query": 'fintech_feature_age_seconds_count{feature_service="churn_v1"}'}).json()["data"]["result"]
    assert ages and float(ages[0]["value"][1]) >= 1


def test_the_metrics_appear_with_several_workers(settings, served_models, table, tmp_path_factory):
    """Every worker writes its own values; /metrics must show their sum (BentoML issue 5056)."""
    process, url = start_server(settings, tmp_path_factory.mktemp("serve"), ONLINE_STORE="sqlite", SERVING_WORKERS="2")
    try:
        customers = latest_rows(table, 60).index.tolist()
        with ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(lambda c: churn_score(url, c), customers))
        exposition = httpx.get(f"{url}/metrics").text
    finally:
        stop(process)
    scored = re.search(r'fintech_predictions_total\{model="churn",outcome="ok",role="champion",version="1"\} (\S+)', exposition)
    answered = re.search(r'fintech_requests_total\{model="churn",role="champion",route="churn-score",status="200",'
                         r'version="1"\} (\S+)', exposition)
    assert scored and answered, exposition[-2000:]
    assert float(answered.group(1)) == len(customers) and float(scored.group(1)) >= len(customers)
    for name in ("fintech_feature_age_seconds_count", "fintech_scoring_latency_seconds_count", "fintech_score_count",
                 "fintech_inference_log_backlog_rows"):
        assert name in exposition


def test_the_canary_analysis_queries_run_on_a_real_prometheus(prometheus, sqlite_url, table):
    """The AnalysisTemplate's PromQL, run for real: the canary and the stable pods are the same
    server here, so every measurement must come back as a number that passes."""
    template = named(render("prod"), "AnalysisTemplate", "fintech-serving-canary-churn")
    customers = latest_rows(table, 30).index.tolist()
    deadline = time.monotonic() + 90
    results = {}
    while time.monotonic() < deadline and len(results) < len(template["spec"]["metrics"]):
        for customer in customers:
            churn_score(sqlite_url, customer)
        time.sleep(3)  # a few scrapes, so that rate() has two samples of the new traffic
        for metric in template["spec"]["metrics"]:
            query = metric["provider"]["prometheus"]["query"].replace("{{args.canary-hash}}", POD_HASH)
            query = query.replace("{{args.stable-hash}}", POD_HASH).replace("{{args.model}}", "churn")
            found = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}).json()["data"]["result"]
            if found and found[0]["value"][1] not in ("NaN", "+Inf"):
                results[metric["name"]] = (float(found[0]["value"][1]), metric["successCondition"])
    assert set(results) == {m["name"] for m in template["spec"]["metrics"]}, results
    for name, (value, condition) in results.items():
        limit = float(yaml.safe_load(condition.split("<=")[1]))
        assert value <= limit, (name, value, condition)
