"""The leases of the shared rate-limit buckets (bentos/redis_limits.py) and the fall-back to the
pod's buckets (bentos/limits.py), over a bucket in memory standing in for Redis; the same against a
real Redis: tests/integration/test_shared_limits.py."""

import logging
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bentos.limits import Limit, RateLimits
from bentos.metrics import metrics
from bentos.redis_limits import RedisBuckets


class Bucket:
    """What the Lua script does, without the refill: tokens from `need` to `want`, or none and the wait."""

    def __init__(self, tokens: float, per_s: float = 1.0):
        self.tokens, self.per_s, self.calls, self.down = tokens, per_s, [], False

    def grant(self, name: str, limit: Limit, need: float, want: float) -> tuple[float, float]:
        if self.down:
            raise RedisConnectionError("Connection refused")
        self.calls.append((need, want))
        if self.tokens < need:
            return 0.0, (need - self.tokens) / self.per_s
        granted = min(self.tokens, want)
        self.tokens -= granted
        return granted, 0.0


INFERENCE = Limit(per_s=1000, burst=2000)


def test_a_lease_is_a_short_window_of_the_rate_at_least_one_token_and_at_most_the_burst():
    buckets = RedisBuckets(Bucket(0).grant, "redis at fake", lease_s=0.02)
    assert buckets.lease_size(INFERENCE) == 20
    assert buckets.lease_size(Limit(per_s=1, burst=10)) == 1
    assert buckets.lease_size(Limit(per_s=10_000, burst=50)) == 50
    assert RedisBuckets(Bucket(0).grant, "redis at fake", lease_s=0).lease_size(INFERENCE) == 1


def test_requests_are_served_from_the_lease_and_only_a_short_one_asks_the_shared_bucket():
    bucket = Bucket(100)
    buckets = RedisBuckets(bucket.grant, "redis at fake", lease_s=0.02)
    assert [buckets.take("inference:c", INFERENCE) for _ in range(45)] == [0.0] * 45
    assert bucket.calls == [(1, 20)] * 3 and bucket.tokens == 40  # 60 taken: 45 served, 15 in the lease
    assert buckets.take("inference:c", INFERENCE, cost=18) == 0.0  # 15 left: 3 more needed, a lease wanted
    assert bucket.calls[-1] == (3, 20) and buckets.leases["inference:c"][0] == 17


def test_a_take_the_shared_bucket_cannot_cover_waits_and_keeps_the_lease():
    bucket = Bucket(25, per_s=10)
    buckets = RedisBuckets(bucket.grant, "redis at fake", lease_s=0.02)
    assert buckets.take("rows:c", INFERENCE, cost=10) == 0.0  # a lease of 20: 10 left over
    assert buckets.take("rows:c", INFERENCE, cost=30) == pytest.approx(1.5)  # 20 needed, 5 there: 15 short at 10/s
    assert bucket.tokens == 5 and buckets.leases["rows:c"][0] == 10
    assert buckets.take("rows:c", INFERENCE, cost=15) == 0.0 and bucket.tokens == 0


def test_a_lease_lapses_so_a_worker_cannot_keep_tokens_it_did_not_use():
    bucket = Bucket(100)
    buckets = RedisBuckets(bucket.grant, "redis at fake", lease_s=0.02, lease_lifetime_s=0.05)
    buckets.take("inference:c", INFERENCE)
    time.sleep(0.06)
    buckets.take("inference:c", INFERENCE)
    assert bucket.calls == [(1, 20), (1, 20)] and bucket.tokens == 60  # the 19 left in the first lease lapsed


def test_a_redis_that_does_not_answer_falls_back_to_the_pods_buckets_and_says_so_once(tmp_path, caplog):
    bucket = Bucket(1000)
    limits = RateLimits({}, {}, tmp_path / "limits.bin", shared=RedisBuckets(bucket.grant, "redis at fake:6379", 0.02),
                        retry_s=0.1)
    fallback = metrics().rate_limits_fallback
    assert limits.take("api_key:c", "inference")[0] == 0.0 and limits.status()["shared"] == "redis at fake:6379"
    bucket.down = True
    with caplog.at_level(logging.WARNING, "bentos.limits"):
        waits = [limits.take("api_key:c", "admin")[0] for _ in range(12)]
    assert waits[:10] == [0.0] * 10 and min(waits[10:]) > 0.9  # the pod's admin burst of 10, at 1/s
    assert len(caplog.records) == 1 and "fake:6379" in caplog.text
    status = limits.status()
    assert status["shared"] == "per pod" and status["since"] and "Connection refused" in status["error"]
    assert fallback._value.get() == 1
    bucket.down = False
    assert limits.take("api_key:c", "inference")[0] == 0.0 and limits.status()["shared"] == "per pod"  # within retry_s
    time.sleep(0.1)
    calls = len(bucket.calls)
    assert limits.take("api_key:c", "admin")[0] == 0.0 and len(bucket.calls) == calls + 1  # Redis's admin bucket is full
    assert limits.status() == {"shared": "redis at fake:6379", "since": None, "error": None}
    assert fallback._value.get() == 0


def test_without_redis_the_limits_are_per_pod(tmp_path):
    limits = RateLimits({}, {}, tmp_path / "limits.bin")
    assert limits.take("api_key:c", "inference")[0] == 0.0
    assert limits.status() == {"shared": "per pod", "since": None, "error": None}
