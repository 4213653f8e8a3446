"""The dev overlay run as a cluster would run it (tests/pods/conftest.py): every pod probed in
time, every container as unprivileged as its manifest says, the serving pod answering from the
features job's rows and the registry pod's models, the jobs doing their work, the dashboard rendering,
and a stop within the grace period that loses no accepted request. The tests run in file order:
the last one stops the serving pod."""

import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from core.families import FAMILIES
from core.schema import CHANNELS, MERCHANT_CATEGORIES
from pods.cluster import TRAINING_JOB
from tests.pods.conftest import API, assert_probed_in_time, assert_unprivileged, client, free_port, running

pytestmark = pytest.mark.pods
CUSTOMER = "C0000001"
TRANSACTION = {"amount": 42.5, "merchant_category": MERCHANT_CATEGORIES[0], "channel": CHANNELS[0],
               "country": "GB", "device_id": "device-1"}
CALLS = {"churn-score": ("POST", {"json": {"customer_id": CUSTOMER}}),
         "churn-batch": ("POST", {"json": {"customer_ids": [CUSTOMER, "C0000002"]}}),
         "segment": ("POST", {"json": {"customer_id": CUSTOMER}}),
         "fraud-detection": ("POST", {"json": {"customer_id": CUSTOMER, "transaction": TRANSACTION}}),
         "explain": ("GET", {"params": {"customer_id": CUSTOMER}})}


@pytest.fixture(scope="module")
def ports():
    return {"fintech-serving": free_port(), "fintech-dashboard": free_port()}


@pytest.fixture(scope="module")
def dev(tmp_path_factory, ports):
    yield from running("dev", tmp_path_factory.mktemp("pods-dev"), ports)


@pytest.fixture(scope="module")
def serving(dev, ports):
    with client(ports["fintech-serving"], dev.client_key) as c:
        yield c


def test_every_pod_passes_each_of_its_probes_within_the_manifests_deadline(dev):
    assert_probed_in_time(dev)


def test_each_container_runs_as_its_manifests_user_with_a_read_only_root_and_no_capabilities(dev):
    assert_unprivileged(dev)


def test_the_serving_pod_answers_every_route_with_the_secrets_key_and_refuses_a_request_without_one(dev, serving):
    for route, (method, request) in CALLS.items():
        response = serving.request(method, f"{API}/{route}", **request)
        assert response.status_code == 200, (route, response.text)
        assert serving.request(method, f"{API}/{route}", **request, headers={"X-API-Key": ""}).status_code == 401, route


# Triton's gRPC client, which the image holds for the protocol's messages, asking the pod's own gRPC port
GRPC_CALL = """
import sys, numpy as np, tritonclient.grpc as triton
client = triton.InferenceServerClient(f"127.0.0.1:{sys.argv[1]}")
ids = triton.InferInput("customer_id", [1], "BYTES")
ids.set_data_from_numpy(np.array([sys.argv[3]], dtype=object))
answer = client.infer("churn", [ids], headers={"x-api-key": sys.argv[2]})
print(client.is_server_ready(), answer.as_numpy("churn_probability")[0])
"""


def test_the_serving_pod_answers_the_protocol_over_grpc_on_its_manifests_grpc_port(dev, serving):
    pod = dev.plan.pod("fintech-serving-0")
    [container] = pod.containers
    done = dev.runtime.exec(pod, container, "python", "-c", GRPC_CALL, str(container.ports["grpc"]), dev.client_key, CUSTOMER)
    assert done.returncode == 0, done.stderr[-2000:]
    ready, probability = done.stdout.split()
    assert ready == "True" and float(probability) == serving.post(f"{API}/churn-score", json={"customer_id": CUSTOMER}).json()[
        "churn_probability"]


def test_the_serving_pod_answers_from_the_rows_the_features_cronjob_wrote_to_the_redis_pod(dev, serving):
    redis = dev.plan.pod("fintech-redis-0")
    password = dev.secrets["fintech-redis"]["password"]
    keys = dev.runtime.exec(redis, redis.containers[0], "redis-cli", "--no-auth-warning", "-a", password, "dbsize")
    assert int(keys.stdout.strip()) > 1000  # a row per seeded customer
    answer = serving.post(f"{API}/churn-score", json={"customer_id": CUSTOMER}).json()
    assert answer["feature_sources"]["default"] == []  # every feature came from the store
    assert serving.post(f"{API}/churn-score", json={"customer_id": "C9999999"}).status_code == 404


def test_the_serving_pod_follows_the_registry_of_the_mlflow_pod_on_the_postgres_pod(dev, serving):
    postgres = dev.plan.pod("fintech-postgres-0")
    rows = dev.runtime.exec(postgres, postgres.containers[0], "psql", "-U", "mlflow", "-d", "mlflow", "-tAc",
                            "select name from registered_models order by name")
    assert rows.stdout.split() == ["churn", "fraud", "segment"]
    # a second fraud version, registered in that registry and made the challenger by the rollout
    # CLI, in a retraining job's pod: the one with the registry's writer account
    canary = ["python", "-m", "rollout", "canary", "fraud", "--share", "50", "--version", "2"]
    code, logs = dev.job(TRAINING_JOB, ["python", "-m", "training", "candidate", "fraud_v2"])
    assert code == 0, logs[-2000:]
    code, logs = dev.job("fintech-features", canary)  # a pod with no registry account cannot move an alias
    assert code != 0 and "401" in logs, logs[-2000:]
    code, logs = dev.job(TRAINING_JOB, canary)
    assert code == 0, logs[-2000:]
    assert serving.post("/admin/reload").status_code == 200
    status = serving.get("/models/status").json()["fraud"]
    assert {(v["version"], v["role"]) for v in status["versions"]} == {("1", "champion"), ("2", "challenger")}
    assert status["registry_error"] is None


def test_the_drift_cronjob_reports_on_each_family_the_retention_one_exits_0_and_a_retraining_dry_run_ends_its_cycle(dev):
    code, logs = dev.job("fintech-drift-report")
    # a report per family from the log the serving pod wrote; the job's exit 1 is its verdict on that
    # log (a share of drifted features above its --fail-above), which this suite's traffic decides: a
    # few customers asked for many times is a window unlike the population, and may be called drifted
    for family in FAMILIES:
        assert re.search(rf"^{family} version \d+: \d+ of \d+ features drifted", logs, re.MULTILINE), (family, logs[-3000:])
    assert not re.search(r"^error:", logs, re.MULTILINE), logs[-3000:]
    assert code == 0 or (code == 1 and "is above 0.1" in logs), logs[-3000:]
    code, logs = dev.job("fintech-inference-log-retention")
    assert code == 0, logs[-3000:]
    retrain = dev.plan.jobs["fintech-retrain-churn"].containers[0]
    code, logs = dev.job("fintech-retrain-churn", [*retrain.command, "--dry-run"], {"RETRAIN_BUDGET_MIN": "1"})
    # the cycle searched, registered and guarded against the serving pod; on the seed's small data the
    # guard may refuse the candidate, which the CLI reports as exit 1 (rollout/cli.py), an error as 2 or 3
    assert "registered {" in logs and "guard {" in logs, logs[-3000:]
    assert code == 0 or (code == 1 and "refused: the candidate's" in logs), logs[-3000:]


def test_the_dashboard_pod_renders_its_overview_in_chromium_without_an_error_box(dev, ports, tmp_path):
    from tests.integration.browser import visit_pages

    visits = visit_pages(f"http://127.0.0.1:{ports['fintech-dashboard']}", tmp_path, CUSTOMER)
    overview = next(v for v in visits if v.page == "overview")
    assert overview.errors == [] and overview.screenshot.stat().st_size > 20_000
    assert {v.page: v.errors for v in visits if v.errors} == {}


def test_no_image_holds_a_secret_of_the_cluster_or_of_this_checkout(dev):
    secrets = [value for data in dev.secrets.values() for key, value in data.items() if not key.endswith(".json")]
    secrets.append(dev.client_key)
    local_key = Path("data/secrets/local.key")
    if local_key.exists():  # the checkout's own key: in the build context of two images, kept out by their ignore files
        secrets.append(local_key.read_text().strip())
    for image in sorted({c.image for pod in dev.plan.pods for c in pod.containers}):
        layers = dev.runtime.podman("image", "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}:{{.GraphDriver.Data.LowerDir}}",
                                    image).stdout.strip().split(":")
        assert len(layers) > 1 and all(Path(layer).is_dir() for layer in layers), image  # every layer, as written

        found = grep(layers, secrets)
        assert found.returncode == 1 and found.stdout == "", (image, found.stdout[:500], found.stderr[:500])
        assert grep(layers, ["fintech:x:10001:10001"]).returncode == 0  # the same search finds what is there: the base's user


def grep(folders: list[str], words: list[str]) -> subprocess.CompletedProcess:
    """grep -r for any of the words, as fixed strings, in every file under the folders."""
    return subprocess.run(["grep", "-rlF", *[arg for w in words for arg in ("-e", w)], *folders],
                          capture_output=True, text=True, check=False)


def test_stopping_the_serving_pod_finishes_what_it_accepted_and_exits_within_its_grace_period(dev, serving):
    pod = dev.plan.pod("fintech-serving-0")
    # 500 ids a call: four callers stay about within the client's rows limit (10,000 rows/s), and a
    # 429 is a refusal before anything was accepted, like a refused connection
    batch = {"customer_ids": [f"C{i:07d}" for i in range(1, 501)]}
    results, stop_at = [], threading.Event()

    def call():
        while not stop_at.is_set():
            try:
                results.append(serving.post(f"{API}/churn-batch", json=batch).status_code)
            except httpx.HTTPError as e:  # refused once the server has closed its socket: not accepted
                results.append(type(e).__name__)
                return

    callers = [threading.Thread(target=call) for _ in range(4)]
    for thread in callers:
        thread.start()
    time.sleep(2)
    took = dev.runtime.stop(pod)
    stop_at.set()
    for thread in callers:
        thread.join(timeout=60)
    answered = [r for r in results if isinstance(r, int) and r != 429]
    assert len(answered) >= 8 and set(answered) == {200}, results  # nothing accepted was dropped or failed
    assert took < pod.grace_period_s and dev.runtime.exit_code(pod, pod.containers[0]) == 0, took
    logged = dev.runtime.podman("volume", "inspect", "--format", "{{.Mountpoint}}", "fintech-data").stdout.strip()
    assert list(Path(logged, "inference_log", "churn").rglob("*.parquet"))  # the log is on the data volume
