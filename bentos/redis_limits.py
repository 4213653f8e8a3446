"""Rate-limit buckets shared by every replica of the service, in Redis, taken in leases.

    buckets = RedisBuckets.connect(settings.redis_connection, timeout_s=0.05, lease_s=0.02)
    wait_s = buckets.take("inference:api_key:nightly-batch", limit)   # 0: taken; else seconds to wait

Each bucket is one Redis hash (`fintech:limits:<scope>:<identity>`), changed only by one Lua script
(TAKE): it refills the bucket from Redis's own clock (`TIME`, so the pods' clocks do not matter),
caps it at the burst, and grants tokens only when at least `need` are there; an idle bucket expires
once it would be full again.

Leases: a worker does not ask Redis on every request. It takes a lease, the tokens `lease_s` of the
limit's rate brings (20 ms: 20 of inference's 1,000/s, 1 of admin's 1/s; never more than the burst),
serves the next requests from it, and asks again when the lease runs short. Tokens only ever leave
the shared bucket, so leases never admit more than the limit. What they can do is strand tokens a
worker took and did not use, at most one lease per worker and bucket, until it lapses
(`lease_lifetime_s`, 1 s): with W workers in each of P pods, a client may be refused while up to
W × P × lease tokens sit unused (2 workers × 10 pods × 20 = 400 of inference's burst of 2,000).

The client connects with short timeouts and never retries: a Redis that does not answer costs one
request one timeout (on the event loop), and RateLimits (bentos/limits.py) then falls back to the
pod's own buckets for a while. A take that timed out may still reach Redis later: it is then
charged twice, never admitted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bentos.limits import Limit

PREFIX = "fintech:limits:"
MAX_LEASES = 4096  # past this, lapsed leases are dropped
# KEYS[1]: the bucket; ARGV: per_s, burst, need, want. Returns {granted, wait_s} as strings (a Lua
# number would come back as an integer, its fraction cut off); keeps the time to the microsecond
# (tostring keeps 14 digits: 100 µs of an epoch time).
TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local per_s, burst, need, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * per_s)
local granted, wait = 0, 0
if tokens >= need then
  granted = math.min(tokens, want)
  tokens = tokens - granted
else
  wait = (need - tokens) / per_s
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(1000 * burst / per_s) + 1000)
return {tostring(granted), tostring(wait)}
"""

Grant = Callable[[str, Limit, float, float], tuple[float, float]]


class RedisBuckets:
    """The shared buckets, through this worker's leases. `grant(name, limit, need, want)` takes
    between `need` and `want` tokens from the shared bucket, or none: (granted, seconds to wait)."""

    def __init__(self, grant: Grant, where: str, lease_s: float, lease_lifetime_s: float = 1.0):
        self.grant, self.where = grant, where
        self.lease_s, self.lease_lifetime_s = lease_s, lease_lifetime_s
        self.leases: dict[str, list[float]] = {}  # per bucket: tokens left, when they lapse (monotonic s)

    @classmethod
    def connect(cls, connection: str, timeout_s: float, lease_s: float) -> RedisBuckets:
        """Buckets in the Redis of a Feast connection string (`host:port[,password=...][,ssl=true][,db=N]`,
        read by Feast's own parser). Nothing is opened until the first take."""
        import redis
        from feast.infra.online_stores.redis import RedisOnlineStore
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        [node, *_], options = RedisOnlineStore._parse_connection_string(connection)
        client = redis.Redis(host=node["host"], port=int(node["port"]), **{
            **options, "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, "retry": Retry(NoBackoff(), 0)})
        script = client.register_script(TAKE)  # EVALSHA; on NOSCRIPT (a restarted Redis) it loads the script again

        def grant(name: str, limit: Limit, need: float, want: float) -> tuple[float, float]:
            granted, wait = script(keys=[PREFIX + name], args=[limit.per_s, limit.burst, need, want])
            return float(granted), float(wait)

        return cls(grant, f"redis at {node['host']}:{node['port']}", lease_s)

    def lease_size(self, limit: Limit) -> int:
        return max(1, min(limit.burst, int(limit.per_s * self.lease_s)))

    def take(self, name: str, limit: Limit, cost: int = 1) -> float:
        """Take `cost` tokens from `name`'s bucket: 0 when there were enough, else the seconds until
        there will be (nothing taken). Raises what the grant raises (RedisError) when Redis does not answer."""
        now = time.monotonic()
        lease = self.leases.get(name)
        left = lease[0] if lease is not None and lease[1] > now else 0.0
        if left >= cost:
            lease[0] -= cost
            return 0.0
        need = cost - left
        granted, wait = self.grant(name, limit, need, max(need, self.lease_size(limit)))
        if granted < need:
            return wait
        if len(self.leases) >= MAX_LEASES:
            self.leases = {key: held for key, held in self.leases.items() if held[1] > now}
        self.leases[name] = [left + granted - cost, now + self.lease_lifetime_s]
        return 0.0
