"""Per-client rate limits: a token bucket per client and scope, shared by every replica through
Redis when the online store is Redis, else by a pod's worker processes.

    limits = RateLimits(per_client, defaults, table, shared=RedisBuckets.connect(...))  # one per worker
    wait_s, limit = limits.take("api_key:nightly-batch", "inference")   # 0: pass; else refuse with 429

A bucket holds up to `burst` requests and refills at `per_s` a second. Each client id may have its
own limits per scope (AUTH_RATE_LIMITS); every other client gets the defaults
(AUTH_DEFAULT_LIMITS).

Shared (bentos/redis_limits.py): every replica takes from one bucket in Redis, so N replicas do not
give a client N times its limit. When Redis errs or does not answer in time, that take and every
take for `retry_s` after it use the pod's buckets instead (a warning once per outage, the gauge
fintech_rate_limits_fallback at 1, `status()` saying since when and why); the first take after
that window asks Redis again, and shares again when it answers.

Per pod: the buckets live in a small memory-mapped file (its default: one per `bentoml serve`, in a
private folder of the service user's in the temporary folder, named by the serving process's id),
so every worker of a pod draws from the same buckets: a client cannot get a worker's limit from
each of them. One lock on the file guards a bucket's read and write, a few microseconds.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import math
import mmap
import os
import stat
import struct
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

SLOT = struct.Struct("<Qdd")  # key (a hash of client and scope), tokens left, last refill (monotonic s)
SLOTS = 4096  # buckets the file holds (128 KiB); past this, the least recently used are reused
PROBES = 8  # slots looked at for a key before the stalest of them is taken over


class Limit(BaseModel):
    per_s: float = Field(gt=0, description="Requests a second, sustained.")
    burst: int = Field(ge=1, description="Requests at once after a quiet spell.")


# per scope, in requests; and `rows`: the ids of churn-batch, each a row (its burst must hold the
# largest batch, 10,000 ids, or such a batch could never pass)
DEFAULT_LIMITS = {"inference": Limit(per_s=1000, burst=2000), "explain": Limit(per_s=50, burst=100),
                  "admin": Limit(per_s=1, burst=10), "rows": Limit(per_s=10_000, burst=20_000)}


def default_table() -> Path:
    """One table per `bentoml serve` (its workers are children of one process), in a folder of the
    service user's own in the temporary folder, made 0700 if missing and refused unless it is a
    private folder of this user: on a shared host another user could otherwise plant the file."""
    folder = Path(tempfile.gettempdir()) / f"fintech-serving-{os.geteuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise RuntimeError(f"{folder}: the rate limits' folder must be a private folder (0700) of this user; "
                           f"remove it, or set AUTH_RATE_LIMIT_FILE")
    return folder / f"limits-{os.getppid()}.bin"


class SharedBuckets:
    """Token buckets in a file that every process mapping it shares. The file is opened without
    following a symbolic link and must be a regular file of this user's with one name."""

    def __init__(self, path: Path, slots: int = SLOTS):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RuntimeError(f"{path}: the rate limits' file is a symbolic link; refusing it") from e
            raise
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
            os.close(self.fd)
            raise RuntimeError(f"{path}: the rate limits' file must be a regular file owned by this user "
                               f"(it is owned by uid {info.st_uid}, with {info.st_nlink} name(s)); refusing it")
        size = slots * SLOT.size
        if info.st_size < size:
            os.ftruncate(self.fd, size)  # zero-filled: every slot empty
        self.table = mmap.mmap(self.fd, size)
        self.slots = slots

    def take(self, name: str, limit: Limit, cost: int = 1) -> float:
        """Take `cost` tokens from `name`'s bucket: 0 when there were enough, else the seconds until
        there will be (nothing taken)."""
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") or 1
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            now = time.monotonic()  # the system's clock: the same in every process
            offset, tokens, refilled = self._find(key, limit, now)
            tokens = min(float(limit.burst), tokens + (now - refilled) * limit.per_s)
            wait = 0.0 if tokens >= cost else (cost - tokens) / limit.per_s
            SLOT.pack_into(self.table, offset, key, tokens - cost if wait == 0 else tokens, now)
            return wait
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def _find(self, key: int, limit: Limit, now: float) -> tuple[int, float, float]:
        """The slot of `key` with its tokens and last refill; a new or reused slot starts full."""
        first, stalest = key % self.slots, None
        for i in range(PROBES):
            offset = (first + i) % self.slots * SLOT.size
            found, tokens, refilled = SLOT.unpack_from(self.table, offset)
            if found == key:
                return offset, tokens, refilled
            if found == 0:
                return offset, float(limit.burst), now
            if stalest is None or refilled < stalest[1]:
                stalest = (offset, refilled)
        return stalest[0], float(limit.burst), now


class Shared(Protocol):
    """Buckets every replica shares (bentos/redis_limits.py), whose take raises RedisError when Redis does not answer."""

    where: str

    def take(self, name: str, limit: Limit, cost: int = 1) -> float: ...


class RateLimits:
    """The limits of each client and scope, drawn from Redis's buckets (`shared`), or from the pod's
    while Redis does not answer, or always when there is no `shared`."""

    def __init__(self, per_client: dict[str, dict[str, Limit]], defaults: dict[str, Limit], table: Path,
                 shared: Shared | None = None, retry_s: float = 5.0):
        """`per_client` by identity ("api_key:<id>" or "token:<id>"); a bare name is an API key's client."""
        self.per_client = {(name if ":" in name else f"api_key:{name}"): limits for name, limits in per_client.items()}
        self.defaults = {**DEFAULT_LIMITS, **defaults}
        self.buckets = SharedBuckets(table)
        self.shared, self.retry_s = shared, retry_s
        self._down_since: datetime | None = None
        self._error = ""
        self._retry_at = 0.0
        if shared is not None:
            self._set_fallback(False)

    def limit(self, client_id: str, scope: str) -> Limit:
        return self.per_client.get(client_id, {}).get(scope) or self.defaults[scope]

    def take(self, client_id: str, scope: str, cost: int = 1) -> tuple[float, Limit]:
        """(seconds to wait, 0 when taken; the limit). A cost above the burst never fits: infinity."""
        limit = self.limit(client_id, scope)
        if cost > limit.burst:
            return math.inf, limit
        if self.shared is not None and time.monotonic() >= self._retry_at:
            try:
                wait = self.shared.take(f"{scope}:{client_id}", limit, cost)
            except RedisError as e:
                self._fell_back(e)
            else:
                if self._down_since is not None:
                    self._shared_again()
                return wait, limit
        return self.buckets.take(f"{scope}\x00{client_id}", limit, cost), limit

    def status(self) -> dict:
        """Where the buckets are: "redis at host:port", or "per pod" (by the settings, or since
        Redis stopped answering, with the error)."""
        shared = self.shared is not None and self._down_since is None
        return {"shared": self.shared.where if shared else "per pod",
                "since": self._down_since.isoformat() if self._down_since else None, "error": self._error or None}

    def _fell_back(self, error: Exception) -> None:
        self._error = f"{type(error).__name__}: {error}"[:300]
        self._retry_at = time.monotonic() + self.retry_s
        if self._down_since is None:
            self._down_since = datetime.now(UTC)
            self._set_fallback(True)
            log.warning("rate limits: %s did not answer (%s); each pod holds its own buckets until it does, "
                        "so a client may get up to its limit from every pod", self.shared.where, self._error)

    def _shared_again(self) -> None:
        log.info("rate limits: %s answers again; the buckets are shared again (per pod since %s)",
                 self.shared.where, f"{self._down_since:%Y-%m-%d %H:%M:%S} UTC")
        self._down_since, self._error = None, ""
        self._set_fallback(False)

    @staticmethod
    def _set_fallback(fallback: bool) -> None:
        from bentos.metrics import metrics

        metrics().rate_limits_fallback.set(1 if fallback else 0)
