"""Who may call which route: bearer tokens from an OpenID provider (JWT) and API keys, each with
scopes, checked in front of the app (an ASGI middleware, bentos/service.py).

    AUTH_ISSUER=https://login.example.com AUTH_AUDIENCE=fintech-serving \
    AUTH_API_KEYS_FILE=/secrets/api_keys.json bentoml serve bentos.service:FintechAPI

Authentication is on unless AUTH_MODE=off says otherwise, and the service does not start without
a credential source: an issuer, or an API-key file (default DATA_DIR/secrets/api_keys.json, which
`make up` writes with a local key: core/api_keys.py).

Scopes: `inference` for the scoring routes, `explain` for explain (it shows feature values),
`admin` for /admin/reload and /admin/whoami. /health, /ready, /livez, /readyz, /metrics and the
OpenAPI documents stay open; every other route needs a valid credential. A token is verified once (signature, iss,
aud, exp, nbf with a small leeway, an asymmetric algorithm from the allowed list) and its client
kept until it expires. The provider's keys come from its discovery document's jwks_uri (PyJWT's
JWKS client); a token naming an unknown `kid` refetches them, at most once per
AUTH_JWKS_REFRESH_S. Refusals follow RFC 6750: 401 with `WWW-Authenticate: Bearer` and the
reason, 403 naming the missing scope. No token or key is ever logged or echoed. Each client is
then held to its rate limit for the route's scope (bentos/limits.py): over it, 429 with Retry-After.
The buckets are shared across replicas through Redis when the online store is Redis; per pod
otherwise, or while Redis does not answer.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio.to_thread
import jwt
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bentos.limits import Limit, RateLimits, default_table
from bentos.redis_limits import RedisBuckets
from bentos.routes import PROTOCOL_PREFIX, scope_of
from core.api_keys import KEYS_FILE, SCOPES, digest, read_keys
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# the JWK key type each algorithm's keys are: a token naming a key of another type is refused before
# PyJWT sees it (PyJWT raises TypeError on the crossing, which would be a 500)
KEY_TYPE = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
OPEN = frozenset({"/health", "/ready", "/livez", "/readyz", "/metrics", "/docs", "/docs.json", "/openapi.json",
                  f"{PROTOCOL_PREFIX}/health/live", f"{PROTOCOL_PREFIX}/health/ready"})
API_KEY_HEADER = b"x-api-key"
REALM = "fintech-serving"


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    mode: Literal["on", "off"] = Field("on", description=(
        "on: every route but the probes, /metrics and the docs needs a bearer token or an API key. off: anyone "
        "who reaches the service may call it (logged as a warning at start and shown on /models/status)."))
    issuer: str = Field("", description="The OpenID provider's issuer URL; its discovery document names its keys. "
                        "Empty: bearer tokens are not accepted, API keys only.")
    audience: str = Field("fintech-serving", description="The `aud` a token must carry.")
    algorithms: str = Field("RS256,PS256,ES256", description="Signature algorithms accepted, comma-separated; asymmetric only.")
    leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp and nbf.")
    jwks_refresh_s: float = Field(30.0, ge=0, description="Least time between two fetches of the provider's keys "
                                  "caused by tokens naming an unknown key.")
    jwks_lifespan_s: float = Field(300.0, gt=0, description="How long the provider's keys are used before they are fetched again.")
    provider_timeout_s: float = Field(5.0, gt=0, description="How long a request to the provider may take.")
    api_keys_file: Path | None = Field(None, description="The API-key file (core/api_keys.py), re-read when it changes "
                                       "[default DATA_DIR/secrets/api_keys.json].")
    token_cache: int = Field(10_000, ge=1, description="Verified tokens kept until they expire.")
    default_limits: dict[str, Limit] = Field(default_factory=dict, description=(
        "Rate limits per scope of the clients AUTH_RATE_LIMITS does not name, as JSON: "
        '{"inference": {"per_s": 1000, "burst": 2000}}. A scope left out keeps its default '
        "(inference 1000/s, burst 2000; explain 50/s, burst 100; admin 1/s, burst 10). The replicas share the "
        "buckets through Redis when the online store is Redis; per pod otherwise, or while Redis does not answer "
        "(AUTH_SHARED_LIMITS)."))
    rate_limits: dict[str, dict[str, Limit]] = Field(default_factory=dict, description=(
        'Rate limits of named clients, per scope, as JSON: {"nightly-batch": {"inference": {"per_s": 3000, "burst": 6000}}}. '
        'A bare name is an API key\'s client; a token\'s client is named "token:<client id>".'))
    shared_limits: Literal["auto", "redis", "pod"] = Field("auto", description=(
        "Where the rate-limit buckets are. redis: one bucket per client and scope for every replica, in the online "
        "store's Redis (REDIS_URL), taken in leases (bentos/redis_limits.py); while Redis does not answer, each pod "
        "falls back to its own. pod: each pod's own, shared by its workers, so N replicas allow N times a limit. "
        "auto: redis when the online store is Redis, else pod."))
    limit_lease_ms: float = Field(20.0, ge=0, description=(
        "A worker takes this long's worth of a limit's rate from Redis at a time (20 ms: 20 of 1000/s; at least 1, at "
        "most the burst) and serves requests from it; 0: one Redis call per request."))
    limit_timeout_ms: float = Field(50.0, gt=0, description="How long Redis may take to connect or answer a take "
                                    "before that request falls back to the pod's buckets.")
    limit_retry_s: float = Field(5.0, ge=0, description="After Redis failed a take, how long the pod's buckets are "
                                 "used before Redis is asked again.")
    rate_limit_file: Path | None = Field(None, description=(
        "The pod's buckets, which its worker processes share (and fall back to while Redis does not answer) [default: "
        "one file per `bentoml serve` in a private (0700) folder of the service user's in the temporary folder]."))

    @property
    def keys_file(self) -> Path:
        return self.api_keys_file or get_settings().secrets_dir / KEYS_FILE

    @field_validator("default_limits")
    @classmethod
    def _default_scopes(cls, value: dict) -> dict:
        return _known_scopes(value, "AUTH_DEFAULT_LIMITS")

    @field_validator("rate_limits")
    @classmethod
    def _client_scopes(cls, value: dict) -> dict:
        for client_id, limits in value.items():
            _known_scopes(limits, f"AUTH_RATE_LIMITS[{client_id!r}]")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: str) -> str:
        names = [a.strip() for a in value.split(",") if a.strip()]
        wrong = [a for a in names if a not in ASYMMETRIC]
        if wrong or not names:
            raise ValueError(f"not an asymmetric signature algorithm: {wrong or value!r}; choose from {', '.join(ASYMMETRIC)}")
        return ",".join(names)


def _known_scopes(limits: dict, where: str) -> dict:
    """The limits named by scope, or `rows` (churn-batch's ids)."""
    unknown = sorted(set(limits) - {*SCOPES, "rows"})
    if unknown:
        raise ValueError(f"{where}: unknown scopes {unknown}; choose from {', '.join(SCOPES)} or rows")
    return limits


@dataclass(frozen=True)
class Client:
    client_id: str
    scopes: frozenset[str]
    via: Literal["token", "api_key"]

    @property
    def identity(self) -> str:
        """The client id in the namespace of how it authenticated: an IdP's client and an API key's
        of the same name are two clients (their buckets, limits and audit records apart)."""
        return f"{self.via}:{self.client_id}"


class Refused(Exception):
    """A request without a credential the service accepts: its status, RFC 6750 error and reason."""

    def __init__(self, status: int, error: str, detail: str, scope: str | None = None, retry_after_s: int = 5):
        super().__init__(detail)
        self.status, self.error, self.detail, self.scope = status, error, detail, scope
        self.retry_after_s = retry_after_s


def invalid(detail: str) -> Refused:
    return Refused(401, "invalid_token", detail)


class TokenVerifier:
    """Bearer tokens of one issuer and audience, verified once and kept until they expire."""

    def __init__(self, settings: AuthSettings):
        self.settings = settings
        self.issuer = settings.issuer.rstrip("/")
        self.algorithms = settings.algorithms.split(",")
        self._keys = None  # PyJWKClient, made on the first token: the provider need not be up at start
        self._verified: OrderedDict[str, tuple[Client, float]] = OrderedDict()
        # discovery failed: no new fetch before this (monotonic s), the wait doubling up to a minute
        self._discovery_lock = threading.Lock()
        self._retry_at, self._backoff_s = 0.0, 0.0

    def cached(self, token: str) -> Client | None:
        """The client of a token verified before and not expired yet (no I/O: safe on the event loop)."""
        hit = self._verified.get(token)
        if hit is None:
            return None
        if hit[1] <= time.time() - self.settings.leeway_s:
            self._verified.pop(token, None)
            return None
        return hit[0]

    def _jwks(self):
        """The provider's keys. Until its discovery document has loaded once, one thread of the
        worker fetches it at a time, and after a failure none does for a while (1 s, doubling up to
        60 s): meanwhile tokens are refused at once with 503 and Retry-After, instead of each
        holding a thread for up to provider_timeout_s."""
        if self._keys is not None:
            return self._keys
        wait_s = self._retry_at - time.monotonic()
        if wait_s > 0 or not self._discovery_lock.acquire(blocking=False):
            raise Refused(503, "provider_unavailable", "the OpenID provider is not answering; try again later",
                          retry_after_s=max(1, math.ceil(wait_s)))
        try:
            if self._keys is None:
                self._keys = self._discover()
                self._backoff_s = 0.0
        except Refused:
            self._backoff_s = min(60.0, max(1.0, 2 * self._backoff_s))
            self._retry_at = time.monotonic() + self._backoff_s
            raise
        finally:
            self._discovery_lock.release()
        return self._keys

    def _discover(self):
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            with urllib.request.urlopen(url, timeout=self.settings.provider_timeout_s) as answer:
                discovery = json.load(answer)
        except (OSError, ValueError) as e:
            log.warning("the OpenID provider's discovery document did not load from %s: %s", url, e)
            raise Refused(503, "provider_unavailable", "the OpenID provider is not answering; try again later") from e
        if not isinstance(discovery, dict) or discovery.get("issuer", "").rstrip("/") != self.issuer or "jwks_uri" not in discovery:
            raise Refused(503, "provider_unavailable", "the OpenID provider's discovery document names another "
                          "issuer or no jwks_uri")
        return jwt.PyJWKClient(discovery["jwks_uri"], lifespan=self.settings.jwks_lifespan_s,
                               cooldown_duration=self.settings.jwks_refresh_s, timeout=self.settings.provider_timeout_s)

    def verify(self, token: str) -> Client:
        """The client a token stands for, or Refused saying why not. May fetch the provider's keys:
        call it off the event loop."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as e:
            raise invalid("the token is not a well-formed JWT") from e
        if header.get("alg") not in self.algorithms:
            raise invalid(f"the token's signature algorithm is not accepted (accepted: {', '.join(self.algorithms)})")
        try:
            key = self._jwks().get_signing_key(header.get("kid"))
        except jwt.PyJWKClientConnectionError as e:
            raise Refused(503, "provider_unavailable", "the OpenID provider's keys did not load") from e
        except jwt.PyJWKClientError as e:
            raise invalid("the token is signed with a key the provider does not publish") from e
        if key.key_type != KEY_TYPE[header["alg"][:2]]:
            raise invalid(f"the token's algorithm {header['alg']} does not fit the type of the key it names ({key.key_type})")
        try:
            claims = jwt.decode(token, key.key, algorithms=[header["alg"]], audience=self.settings.audience,
                                issuer=self.issuer, leeway=self.settings.leeway_s,
                                options={"require": ["exp", "iss", "aud"]})
        except (jwt.PyJWTError, TypeError, ValueError) as e:  # anything PyJWT raises on a token is a refusal
            raise invalid(self._reason(e)) from e
        scopes = claims.get("scope", "")
        scopes = scopes.split() if isinstance(scopes, str) else list(claims.get("scp", []))
        client_id = claims.get("client_id") or claims.get("azp") or claims.get("sub")
        if not client_id or not isinstance(client_id, str):
            raise invalid("the token names no client (client_id, azp or sub)")
        client = Client(client_id, frozenset(scopes), "token")
        self._verified[token] = (client, float(claims["exp"]))
        while len(self._verified) > self.settings.token_cache:
            self._verified.popitem(last=False)
        return client


    def _reason(self, error: Exception) -> str:
        """What is wrong with a token PyJWT refused, in the words of the 401's detail."""
        if isinstance(error, jwt.MissingRequiredClaimError):
            return f"the token lacks the {error.claim!r} claim"
        reasons = ((jwt.ExpiredSignatureError, "the token has expired"),
                   (jwt.ImmatureSignatureError, "the token is not valid yet (nbf or iat in the future)"),
                   (jwt.InvalidAudienceError, f"the token is not for this service (audience {self.settings.audience!r})"),
                   (jwt.InvalidIssuerError, "the token comes from another issuer"),
                   (jwt.InvalidSignatureError, "the token's signature does not verify"))
        return next((reason for kind, reason in reasons if isinstance(error, kind)), "the token is not valid")


class ApiKeys:
    """The API-key file, re-read when it changes (checked at most once a second).

    A file that does not validate as a whole (core.api_keys.read_keys) fails closed: every key is
    refused until it is fixed, so that a revocation written with a typo cannot leave the revoked
    key valid. Such a refusal is a 503 (`api_keys_unavailable`), not a 401, and the gauge
    fintech_api_keys_file_valid drops to 0, which FintechApiKeyFileInvalid alerts on."""

    def __init__(self, path: Path):
        self.path = path
        self._seen: tuple[float, int] | None = None
        self._checked = 0.0
        self._clients: dict[str, Client] = {}
        self.valid = True
        self._reload()

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._clients, self._seen = {}, None
            self._set_valid(True)
            return
        if (stat.st_mtime, stat.st_size) == self._seen:
            return
        self._seen = (stat.st_mtime, stat.st_size)
        try:
            entries = read_keys(self.path)
        except ValueError as e:
            log.error("the API-key file does not validate; every API key is refused until it does: %s", e)
            self._clients = {}
            self._set_valid(False)
            return
        self._clients = {e["sha256"]: Client(e["client_id"], frozenset(e["scopes"]), "api_key") for e in entries}
        self._set_valid(True)
        log.info("API keys: %d client key(s) from %s", len(self._clients), self.path)

    def _set_valid(self, valid: bool) -> None:
        from bentos.metrics import metrics

        self.valid = valid
        metrics().api_keys_file_valid.set(1 if valid else 0)

    def client(self, key: str) -> Client | None:
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            self._reload()
        if not self.valid:
            raise Refused(503, "api_keys_unavailable", "the service cannot check API keys now",
                          retry_after_s=30)
        return self._clients.get(digest(key))


class Authenticate:
    """ASGI middleware: identify the caller (bearer token or X-API-Key), check the route's scope,
    and hand the client on in scope["state"]["client"] (and the rate limits, for /models/status)."""

    def __init__(self, app, settings: AuthSettings, core: Settings | None = None):
        """`core`: where the online store is (default: from the environment)."""
        self.app = app
        self.tokens = TokenVerifier(settings) if settings.issuer else None
        self.keys = ApiKeys(settings.keys_file)
        self.limits = RateLimits(settings.rate_limits, settings.default_limits, settings.rate_limit_file or default_table(),
                                 shared=shared_buckets(settings, core or get_settings()), retry_s=settings.limit_retry_s)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # the service has no websocket route: none reaches the app unchecked
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http" or scope["path"] in OPEN:  # lifespan, and the open routes
            return await self.app(scope, receive, send)
        try:
            client = await self.identify(scope["headers"])
            needed = scope_of(scope["path"])  # bentos/routes.py; other paths need a valid credential only
            if needed is not None:
                if needed not in client.scopes:
                    raise Refused(403, "insufficient_scope", f"this route needs the scope {needed!r}", scope=needed)
                self.hold_to_limit(client, needed)
        except Refused as refused:
            return await refuse(send, refused)
        state = scope.setdefault("state", {})
        state["client"], state["rate_limits"] = client, self.limits
        state["charge_rows"] = lambda rows: self.hold_to_limit(client, "rows", rows)  # churn-batch: one per id
        await self.app(scope, receive, send)

    def hold_to_limit(self, client: Client, scope: str, cost: int = 1) -> None:
        """Take `cost` from the client's bucket of `scope` (requests; or `rows`), or refuse with 429."""
        wait_s, limit = self.limits.take(client.identity, scope, cost)
        unit = "rows" if scope == "rows" else "requests"
        if wait_s == math.inf:
            raise Refused(429, "rate_limited", f"{cost} {unit} at once is more than client {client.identity!r}'s {scope} "
                          f"burst ({limit.burst}): send smaller batches", retry_after_s=1)
        if wait_s:
            raise Refused(429, "rate_limited", f"client {client.identity!r} is over its {scope} limit "
                          f"({limit.per_s:g} {unit}/s, burst {limit.burst})", retry_after_s=max(1, math.ceil(wait_s)))

    async def identify(self, headers: list[tuple[bytes, bytes]]) -> Client:
        authorization = key = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == API_KEY_HEADER:
                key = value.decode("latin-1")
        if key is not None:
            client = self.keys.client(key)
            if client is None:
                raise Refused(401, "invalid_token", "the API key is not valid (unknown or revoked)")
            return client
        if authorization is None:
            raise Refused(401, "unauthorized", "this route needs a bearer token (Authorization: Bearer ...) or an API key (X-API-Key)")
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Refused(400, "invalid_request", "the Authorization header must be `Bearer <token>`")
        if self.tokens is None:
            raise invalid("this service accepts no bearer tokens (no issuer is configured); use an API key")
        token = token.strip()
        return self.tokens.cached(token) or await anyio.to_thread.run_sync(self.tokens.verify, token)


def shared_buckets(settings: AuthSettings, core: Settings) -> RedisBuckets | None:
    """Redis's buckets when the limits are shared across replicas, else None: per pod."""
    if settings.shared_limits == "pod" or (settings.shared_limits == "auto" and core.online_store != "redis"):
        return None
    return RedisBuckets.connect(core.redis_connection, settings.limit_timeout_ms / 1000, settings.limit_lease_ms / 1000)


def challenge(refused: Refused) -> str:
    """The WWW-Authenticate value of a refusal (RFC 6750, section 3)."""
    if refused.error == "unauthorized":  # no credential at all: no error code
        return f'Bearer realm="{REALM}"'
    parts = [f'realm="{REALM}"', f'error="{refused.error}"', f'error_description="{refused.detail}"']
    if refused.scope:
        parts.append(f'scope="{refused.scope}"')
    return "Bearer " + ", ".join(parts)


def refusal(refused: Refused) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a refusal (besides the content type and length)."""
    field = {403: "scope", 429: "client"}.get(refused.status, "Authorization")
    body = json.dumps({"error": refused.error, "detail": refused.detail,
                       "fields": [{"field": field, "message": refused.detail}]}).encode()
    if refused.status in (400, 401, 403):
        return body, {"www-authenticate": challenge(refused)}
    return body, {"retry-after": str(refused.retry_after_s)}


async def refuse(send, refused: Refused) -> None:
    body, extra = refusal(refused)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((name.encode(), value.encode()) for name, value in extra.items())]
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


OFF_WARNING = "AUTH_MODE=off: every route is open to anyone who can reach the service"


def check_mode(settings: AuthSettings) -> None:
    """At start: with auth on, a credential source must exist; off is said loudly."""
    if settings.mode == "off":
        log.warning(OFF_WARNING)
        return
    if not settings.issuer and not settings.keys_file.exists():
        raise RuntimeError(
            f"authentication is on (the default) and there is no credential source: no AUTH_ISSUER (bearer tokens) "
            f"and no API-key file at {settings.keys_file} (AUTH_API_KEYS_FILE). `make api-key` writes one with a "
            f"local key; to serve without authentication, set AUTH_MODE=off")
