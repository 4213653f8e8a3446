"""Rate limits shared across replicas through a real redis-server (bentos/redis_limits.py): two
"pods" (two RateLimits, each with its own pod file) admit a client's burst between them, not each;
a Redis killed or hung falls back to the pods' buckets within the timeout and is shared again once
it answers; churn-batch's rows are charged the same way through the real middleware."""

import logging
import os
import signal
import time

import pytest
import redis
from fastapi.testclient import TestClient

from bentos.api import create_app
from bentos.auth import Authenticate, AuthSettings
from bentos.config import API_PREFIX, ServingSettings
from bentos.family import Server
from bentos.limits import Limit, RateLimits
from bentos.metrics import metrics
from bentos.redis_limits import PREFIX, RedisBuckets
from core.api_keys import new_key
from core.settings import get_settings
from tests.integration.conftest import RedisServer

pytestmark = pytest.mark.integration
CLIENT = "api_key:nightly-batch"
SLOW = {CLIENT: {"inference": Limit(per_s=0.001, burst=100)}}  # a burst of 100, next to no refill


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def pod(tmp_path, name: str, redis_server: RedisServer | None, lease_s: float = 0.02, retry_s: float = 5.0,
        options: str = "") -> RateLimits:
    shared = None if redis_server is None else RedisBuckets.connect(redis_server.url + options, timeout_s=0.05, lease_s=lease_s)
    return RateLimits(SLOW, {}, tmp_path / f"{name}.bin", shared=shared, retry_s=retry_s)


def admitted(pods: list[RateLimits], requests: int) -> int:
    """Requests admitted of `requests` sent to each pod in turn."""
    return sum(pods[i % len(pods)].take(CLIENT, "inference")[0] == 0 for i in range(requests))


@pytest.mark.parametrize("lease_s", [0.0, 200_000.0])  # leases of 1 token; of 200 tokens, capped at the burst: one pod takes it whole
def test_two_pods_sharing_redis_admit_the_burst_between_them_where_their_own_buckets_admit_it_each(tmp_path, redis_server, lease_s):
    shared = [pod(tmp_path, name, redis_server, lease_s, options=",db=2") for name in ("a", "b")]  # Feast's connection string
    assert admitted(shared, 300) == 100
    db2 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=2)
    assert float(db2.hget(f"{PREFIX}inference:{CLIENT}", "tokens")) < 1
    assert admitted([pod(tmp_path, "c", None), pod(tmp_path, "d", None)], 300) == 200


def test_a_lease_strands_at_most_its_own_tokens_in_one_pod_and_never_admits_more(tmp_path, redis_server):
    a, b = (pod(tmp_path, name, redis_server, lease_s=20_000) for name in ("a", "b"))  # leases of 20 tokens
    assert admitted([a], 85) == 85  # five leases: 15 tokens left in a's
    assert admitted([b], 10) == 0  # the shared bucket is empty while a holds them
    assert admitted([a], 20) == 15


def test_a_killed_redis_falls_back_to_the_pods_buckets_and_is_shared_again_once_restarted(tmp_path, redis_server, caplog):
    limits = pod(tmp_path, "a", redis_server, lease_s=0.0, retry_s=0.3)
    fallback = metrics().rate_limits_fallback
    assert limits.take(CLIENT, "inference")[0] == 0 and limits.status()["shared"] == f"redis at {redis_server.url}"
    redis_server.kill()
    with caplog.at_level(logging.WARNING, "bentos.limits"):
        started = time.monotonic()
        waits = [limits.take(CLIENT, "inference")[0] for _ in range(120)]
        elapsed = time.monotonic() - started
    assert waits[:100] == [0.0] * 100 and min(waits[100:]) > 0  # the pod's own full burst: Redis's 99 are out of reach
    assert elapsed < 0.5 and len(caplog.records) == 1
    status = limits.status()
    assert status["shared"] == "per pod" and status["since"] and "ConnectionError" in status["error"]
    assert fallback._value.get() == 1

    redis_server.start()  # empty: the script and the bucket are gone
    time.sleep(0.3)
    assert limits.take(CLIENT, "inference")[0] == 0
    assert limits.status() == {"shared": f"redis at {redis_server.url}", "since": None, "error": None}
    assert float(redis_server.client().hget(f"{PREFIX}inference:{CLIENT}", "tokens")) == pytest.approx(99, abs=0.01)
    assert fallback._value.get() == 0


def test_a_redis_that_hangs_is_given_up_on_after_the_timeout(tmp_path, redis_server):
    limits = pod(tmp_path, "a", redis_server, lease_s=0.0)
    assert limits.take(CLIENT, "inference")[0] == 0
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert limits.take(CLIENT, "inference")[0] == 0
        elapsed = time.monotonic() - started
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert 0.04 <= elapsed < 0.3, elapsed
    assert limits.status()["shared"] == "per pod" and "Timeout" in limits.status()["error"]


def batch(ids: int) -> dict:
    return {"customer_ids": [f"C{i:07d}" for i in range(ids)]}


class Batches:
    """A churn family that scores any batch and has nothing to report."""

    def score_batch(self, requests, reasons=True):
        return [{"customer_id": r["customer_id"], "churn_probability": 0.1, "risk_level": "low",
                 "model": {"name": "churn", "version": "1", "role": "champion", "feature_service": "churn_v1"}} for r in requests]

    def status(self) -> dict:
        return {"versions": []}


@pytest.mark.parametrize("shared_limits", ["auto", "pod"])
def test_churn_batch_rows_are_charged_to_one_bucket_across_two_pods_through_the_middleware(
        tmp_path, monkeypatch, redis_server, shared_limits):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    keys = tmp_path / "api_keys.json"
    key = {"X-API-Key": new_key(keys, "nightly-batch", ["inference", "admin"])}
    server = Server(ServingSettings(families="churn"))
    server.families = {"churn": Batches()}
    core = get_settings(data_dir=tmp_path, online_store="redis", redis_url=redis_server.url)
    a, b = (TestClient(Authenticate(create_app(server), AuthSettings(
        api_keys_file=keys, rate_limit_file=tmp_path / f"{name}.bin", shared_limits=shared_limits,
        default_limits={"rows": Limit(per_s=0.001, burst=100)}), core)) for name in ("a", "b"))
    assert a.post(f"{API_PREFIX}/churn-batch", json=batch(60), headers=key).status_code == 200
    second = b.post(f"{API_PREFIX}/churn-batch", json=batch(60), headers=key)  # 40 rows left of 100, if shared
    shared = a.get("/models/status", headers=key).json()["churn"]["rate_limits"]["shared"]
    if shared_limits == "pod":
        assert second.status_code == 200 and shared == "per pod"
        return
    assert second.status_code == 429 and "rows" in second.json()["detail"] and int(second.headers["retry-after"]) > 1000
    assert b.post(f"{API_PREFIX}/churn-batch", json=batch(40), headers=key).status_code == 200
    assert a.post(f"{API_PREFIX}/churn-batch", json=batch(1), headers=key).status_code == 429
    assert shared == f"redis at {redis_server.url}"
