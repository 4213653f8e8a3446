"""What the authentication middleware (bentos/auth.py) costs per request, in process, without HTTP:
the same request through the middleware over a no-op app, with an API key and with a bearer
token already verified (its cached client), against the no-op app alone; and what verifying a
new RS256 token costs once (PyJWT, the signature and the claims). The serving benchmark runs it
(loadtests/bench_serving.py) and reports it beside target (f).

The rate limits of those rows are the pod's (AUTH_SHARED_LIMITS=pod). With a Redis (a URL, or a
redis-server of its own when one is on PATH; else those rows are left out) an API key's request is
also measured with the buckets shared through Redis: one Lua call per request (a lease of one
token, AUTH_LIMIT_LEASE_MS=0), and the default lease (20 ms of inference's 1,000/s: 20 requests a call).

    python -m loadtests.bench_auth [redis-host:port]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bentos.auth import Authenticate, AuthSettings, Client
from core.api_keys import new_key
from core.settings import get_settings
from loadtests.servers import redis_server

SCORE = "/api/v1/inference/churn-score"
ISSUER = "https://login.example.com"


async def _noop(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _per_request_us(app, headers: list[tuple[bytes, bytes]], calls: int) -> float:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message["type"])

    started = time.perf_counter()
    for _ in range(calls):
        scope = {"type": "http", "path": SCORE, "method": "POST", "headers": headers}
        await app(scope, receive, send)
    elapsed = time.perf_counter() - started
    assert sent.count("http.response.start") == calls
    return 1e6 * elapsed / calls


@contextmanager
def _redis(url: str | None, work: Path):
    """`url`, or a redis-server of its own for the duration (None when there is none on PATH)."""
    if url or not shutil.which("redis-server"):
        yield url
        return
    process, port = redis_server(work)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def credential_costs(calls: int = 20_000, repeats: int = 5, redis_url: str | None = None) -> dict:
    """Microseconds per request: the median of `repeats` runs of `calls` requests each, the kinds
    alternating so that each sees the same machine."""
    work = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    keys = work / "api_keys.json"
    key = new_key(keys, "bench-auth", ["inference"])
    # inference's default rate (its lease: 20 requests), with a burst no run exhausts
    unlimited = {"bench-auth": {"inference": {"per_s": 1000, "burst": 10**9}}}

    def settings(name: str, **limits) -> AuthSettings:
        return AuthSettings(mode="on", issuer=ISSUER, api_keys_file=keys, rate_limit_file=work / f"{name}.bin",
                            rate_limits=unlimited, **limits)

    app = Authenticate(_noop, settings("limits", shared_limits="pod"))
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": app.tokens.settings.audience, "exp": now + 3600, "iat": now, "client_id": "bench-auth",
              "scope": "inference"}
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
    app.tokens._verified[token] = (Client("bench-auth", frozenset({"inference"}), "token"), float(claims["exp"]))
    api_key = [(b"x-api-key", key.encode())]
    kinds = {"no_auth": (_noop, []), "api_key": (app, api_key),
             "bearer_cached": (app, [(b"authorization", f"Bearer {token}".encode())])}
    with _redis(redis_url, work) as url:
        if url is not None:
            core = get_settings(online_store="redis", redis_url=url)
            for kind, lease_ms in (("api_key_redis_each", 0.0), ("api_key_redis_lease", 20.0)):
                shared = Authenticate(_noop, settings(kind, shared_limits="redis", limit_lease_ms=lease_ms), core)
                kinds[kind] = (shared, api_key)
        runs: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(repeats):
            for kind, (target, headers) in kinds.items():
                runs[kind].append(asyncio.run(_per_request_us(target, headers, calls)))
    out = {f"{kind}_us": round(statistics.median(values), 2) for kind, values in runs.items()}

    public = private.public_key()
    started = time.perf_counter()
    verifications = 500
    for _ in range(verifications):
        jwt.decode(token, public, algorithms=["RS256"], audience=app.tokens.settings.audience, issuer=ISSUER)
    out["first_verification_us"] = round(1e6 * (time.perf_counter() - started) / verifications, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(credential_costs(redis_url=sys.argv[1] if len(sys.argv) > 1 else None)))
