"""Authentication in front of the app (bentos/auth.py): real RSA keys, real JWTs signed with
PyJWT, a JWKS and discovery document served over HTTP on localhost, and the API-key file."""

import json
import os
import stat
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bentos.auth import Authenticate, AuthSettings, check_mode
from bentos.limits import Limit, SharedBuckets, default_table
from core.api_keys import client_headers, ensure_local_key, new_key, revoke

SCORE = "/api/v1/inference/churn-score"
EXPLAIN = "/api/v1/inference/explain"


class Provider:
    """An issuer's discovery document and keys over HTTP; `rotate` replaces its signing key (RSA).
    It also publishes an EC key, "e1": a provider with keys of two types."""

    def __init__(self):
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/jwks"}
                else:
                    provider.fetches += 1
                    body = {"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())), "kid": kid,
                                      "use": "sig", "alg": "RS256"} for kid, k in provider.keys.items()]
                            + [{**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(provider.ec_key.public_key())),
                                "kid": "e1", "use": "sig", "alg": "ES256"}]}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.rotate("k1")

    def rotate(self, kid: str) -> None:
        self.keys = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.kid = kid

    def token(self, scope="inference", key=None, kid=None, algorithm="RS256", **claims) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": "fintech-serving", "sub": "svc", "client_id": "retention-app",
                   "iat": now, "exp": now + 300, "scope": scope, **claims}
        return jwt.encode({k: v for k, v in payload.items() if v is not None}, key or self.keys[self.kid], algorithm=algorithm,
                          headers={"kid": kid or self.kid})


async def echo(scope, receive, send):
    """The app behind the middleware: names the client it was handed (none on the open routes)."""
    client = scope.get("state", {}).get("client")
    body = json.dumps(client and {"client_id": client.client_id, "via": client.via}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def provider():
    p = Provider()
    yield p
    p.server.shutdown()


@pytest.fixture
def keys_file(tmp_path):
    return tmp_path / "api_keys.json"


@pytest.fixture
def client(provider, keys_file):
    settings = AuthSettings(mode="on", issuer=provider.issuer, api_keys_file=keys_file, jwks_refresh_s=0, leeway_s=5,
                            rate_limit_file=keys_file.with_name("limits.bin"))
    return TestClient(Authenticate(echo, settings))


def refused(response, status: int, error: str, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and words in body["detail"], body
    assert response.headers["www-authenticate"].startswith("Bearer realm=")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_a_valid_token_with_the_scope_passes_and_names_its_client(client, provider):
    answer = client.post(SCORE, headers=bearer(provider.token()))
    assert answer.status_code == 200 and answer.json() == {"client_id": "retention-app", "via": "token"}


def test_the_probes_metrics_and_docs_need_no_credential(client):
    for path in ("/health", "/ready", "/livez", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_no_credential_is_a_401_with_a_bare_challenge(client):
    answer = client.post(SCORE)
    refused(answer, 401, "unauthorized", "bearer token")
    assert answer.headers["www-authenticate"] == 'Bearer realm="fintech-serving"'


@pytest.mark.parametrize("case, words", [
    ("malformed", "well-formed"),
    ("expired", "expired"),
    ("not yet valid", "not valid yet"),
    ("wrong issuer", "another issuer"),
    ("wrong audience", "not for this service"),
    ("bad signature", "does not verify"),
    ("alg none", "algorithm"),
    ("HS256 with the public key", "algorithm"),
    ("unknown kid", "does not publish"),
    ("no exp", "'exp'"),
])
def test_each_bad_token_is_refused_with_its_reason(client, provider, case, words):
    now = int(time.time())
    public_pem = provider.keys[provider.kid].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": provider.issuer, "aud": "fintech-serving", "exp": now + 300, "scope": "inference"}
    token = {
        "malformed": lambda: "not.a.jwt",
        "expired": lambda: provider.token(exp=now - 60, iat=now - 400),
        "not yet valid": lambda: provider.token(nbf=now + 600),
        "wrong issuer": lambda: provider.token(iss="https://elsewhere.example.com"),
        "wrong audience": lambda: provider.token(aud="another-service"),
        "bad signature": lambda: provider.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "alg none": lambda: jwt.encode(claims, None, algorithm="none", headers={"kid": provider.kid}),
        "HS256 with the public key": lambda: _hs256(claims, public_pem, provider.kid),
        "unknown kid": lambda: provider.token(kid="no-such-key"),
        "no exp": lambda: provider.token(exp=None),
    }[case]()
    answer = client.post(SCORE, headers=bearer(token))
    refused(answer, 401, "invalid_token", words)
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert token not in answer.text


@pytest.mark.parametrize("algorithm,kid", [("ES256", "k1"), ("RS256", "e1"), ("PS256", "e1")])
def test_a_token_whose_algorithm_does_not_fit_its_keys_type_is_a_401_not_a_500(client, provider, algorithm, kid):
    """Signed by the caller's own key of the algorithm's type, naming the provider's key of the other type."""
    own = ec.generate_private_key(ec.SECP256R1()) if algorithm.startswith("ES") else \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    token = jwt.encode({"iss": provider.issuer, "aud": "fintech-serving", "exp": now + 300, "scope": "inference"},
                       own, algorithm=algorithm, headers={"kid": kid})
    refused(client.post(SCORE, headers=bearer(token)), 401, "invalid_token", "does not fit")


def test_a_token_signed_by_the_providers_ec_key_passes(client, provider):
    token = provider.token(key=provider.ec_key, kid="e1", algorithm="ES256")
    assert client.post(SCORE, headers=bearer(token)).json()["client_id"] == "retention-app"


def _unsigned(header: bytes | dict, payload: dict | None = None) -> str:
    """A token with this JOSE header (raw bytes, or a dict as JSON) and a signature of garbage."""
    import base64

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return ".".join([b64(raw), b64(json.dumps(payload or {"aud": "fintech-serving"}).encode()), b64(b"\x00" * 64)])


@pytest.mark.parametrize("header", [
    {"alg": "HS512", "kid": "k1"}, {"alg": "none"}, {"alg": ["RS256"], "kid": "k1"}, {"alg": None},
    {"alg": "RS256", "kid": "k1", "jwk": {"kty": "oct", "k": "AAAA"}}, {"alg": "RS256", "kid": "k1", "jku": "http://127.0.0.1:1/jwks"},
    {"alg": "RS256", "kid": "k1", "x5u": "http://127.0.0.1:1/cert"}, {"alg": "RS256", "kid": "k1", "crit": ["exp"]},
    {"alg": "RS256", "kid": "k" * 100_000}, {"alg": "RS256", "kid": 7}, {"alg": "RS256", "kid": {"a": 1}},
    {"alg": "RS256", "kid": None}, {"alg": "ES256", "kid": "k1"}, {"alg": "EdDSA", "kid": "e1"},
    b"not json", b"[1, 2]", b'"a string"', b"\xff\xfe",
], ids=lambda h: (h[:12].decode("latin-1") if isinstance(h, bytes) else json.dumps(h)[:40]))
def test_a_hostile_jose_header_is_a_4xx_never_a_5xx(client, header):
    answer = client.post(SCORE, headers=bearer(_unsigned(header)))
    assert 400 <= answer.status_code < 500 and answer.json()["error"] in ("invalid_token", "invalid_request"), answer.text


def test_a_websocket_is_closed_before_it_reaches_the_app(client):
    for path in ("/admin/reload", "/api/v1/inference/churn-score", "/health"):
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(path):
            pass
        assert closed.value.code == 1008, path  # policy violation


def _hs256(claims: dict, secret: bytes, kid: str) -> str:
    """A token signed with HMAC keyed by the public key: the algorithm-confusion attack."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def test_a_missing_scope_is_a_403_naming_it(client, provider):
    answer = client.get(EXPLAIN, headers=bearer(provider.token(scope="inference")))
    refused(answer, 403, "insufficient_scope", "'explain'")
    assert 'scope="explain"' in answer.headers["www-authenticate"]
    assert client.get(EXPLAIN, headers=bearer(provider.token(scope="inference explain"))).status_code == 200


def test_a_malformed_authorization_header_is_a_400(client):
    refused(client.post(SCORE, headers={"Authorization": "Basic dXNlcjpwYXNz"}), 400, "invalid_request", "Bearer <token>")


def test_a_rotated_key_is_fetched_when_a_token_names_it(client, provider):
    assert client.post(SCORE, headers=bearer(provider.token())).status_code == 200
    provider.rotate("k2")
    fetches = provider.fetches
    assert client.post(SCORE, headers=bearer(provider.token())).status_code == 200
    assert provider.fetches == fetches + 1
    provider.rotate("k1")


def test_a_verified_token_is_not_verified_again(client, provider):
    token = provider.token()
    assert client.post(SCORE, headers=bearer(token)).status_code == 200
    verifier = client.app.tokens
    assert verifier.cached(token) is not None
    provider.rotate("k3")  # its keys are gone from the provider: only the cache can still accept it
    assert client.post(SCORE, headers=bearer(token)).status_code == 200
    provider.rotate("k1")


def test_api_keys_pass_with_their_scopes_and_a_revoked_one_stops_within_a_second(client, keys_file):
    key = new_key(keys_file, "nightly-batch", ["inference"])
    assert json.loads(keys_file.read_text())[0]["sha256"] != key and key not in keys_file.read_text()
    time.sleep(1.1)
    answer = client.post(SCORE, headers={"X-API-Key": key})
    assert answer.status_code == 200 and answer.json() == {"client_id": "nightly-batch", "via": "api_key"}
    refused(client.get(EXPLAIN, headers={"X-API-Key": key}), 403, "insufficient_scope", "'explain'")
    refused(client.post(SCORE, headers={"X-API-Key": "fsk_wrong"}), 401, "invalid_token", "API key")
    assert revoke(keys_file, "nightly-batch") == 1
    time.sleep(1.1)
    refused(client.post(SCORE, headers={"X-API-Key": key}), 401, "invalid_token", "revoked")


GOOD_DIGEST = "ab" * 32


def _entry(**fields) -> dict:
    return {"client_id": "a", "sha256": GOOD_DIGEST, "scopes": ["inference"], **fields}


BAD_KEY_FILES = {
    "not JSON": "[{",
    "not a list": json.dumps(_entry()),
    "an entry that is not an object": "[7]",
    "scopes that are not a list": json.dumps([_entry(scopes=3)]),
    "an unknown scope": json.dumps([_entry(scopes=["root"])]),
    "no scope": json.dumps([_entry(scopes=[])]),
    "a missing field": json.dumps([{"client_id": "a", "scopes": ["inference"]}]),
    "a digest that is not SHA-256 hex": json.dumps([_entry(sha256="xyz")]),
    "an empty client id": json.dumps([_entry(client_id="")]),
    "a client id that is not text": json.dumps([_entry(client_id=5)]),
    "the same digest twice": json.dumps([_entry(), _entry(client_id="b", scopes=["admin"])]),
}


@pytest.mark.parametrize("problem", BAD_KEY_FILES)
def test_a_key_file_that_does_not_validate_refuses_every_key_until_it_is_fixed(client, keys_file, problem):
    """Fail closed: a revocation with a typo must not leave the revoked key valid. The refusal is a
    503 (the service cannot check keys), not a 401 (the key is wrong), and the gauge alerts on it."""
    key = new_key(keys_file, "nightly-batch", ["inference"])
    good = keys_file.read_text()
    keys = client.app.keys
    assert client.post(SCORE, headers={"X-API-Key": key}).status_code == 200 and keys.valid
    keys_file.write_text(BAD_KEY_FILES[problem])
    keys._checked = 0  # re-read now, not a second from now
    answer = client.post(SCORE, headers={"X-API-Key": key})
    assert answer.status_code == 503 and answer.json()["error"] == "api_keys_unavailable", answer.text
    assert str(keys_file) not in answer.text and not keys.valid
    keys_file.write_text(good)
    keys._checked = 0
    assert client.post(SCORE, headers={"X-API-Key": key}).status_code == 200 and keys.valid


def test_auth_is_on_by_default_and_will_not_start_without_a_credential_source(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTH_MODE", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    settings = AuthSettings()
    assert settings.mode == "on" and settings.keys_file == tmp_path / "secrets" / "api_keys.json"
    with pytest.raises(RuntimeError, match=r"no credential source.*make api-key.*AUTH_MODE=off"):
        check_mode(settings)
    check_mode(AuthSettings(mode="off"))  # off only when asked for, with a warning
    ensure_local_key(tmp_path / "secrets")
    check_mode(AuthSettings())
    with pytest.raises(ValueError, match="asymmetric"):
        AuthSettings(algorithms="RS256,HS256")
    with pytest.raises(ValueError, match=r"nightly-batch.*unknown scopes \['inferense'\]"):
        AuthSettings(rate_limits={"nightly-batch": {"inferense": {"per_s": 5, "burst": 5}}})


def test_the_local_key_is_made_once_private_and_replaced_when_revoked(tmp_path, monkeypatch):
    monkeypatch.delenv("FINTECH_API_KEY", raising=False)
    monkeypatch.delenv("FINTECH_API_KEY_FILE", raising=False)
    secrets = tmp_path / "secrets"
    key, made = ensure_local_key(secrets)
    assert made and ensure_local_key(secrets) == (key, False)
    assert (secrets / "local.key").stat().st_mode & 0o777 == 0o600 and key not in (secrets / "api_keys.json").read_text()
    assert client_headers(secrets) == {"X-API-Key": key}
    revoke(secrets / "api_keys.json", "local")
    replaced, made = ensure_local_key(secrets)
    assert made and replaced != key
    monkeypatch.setenv("FINTECH_API_KEY", "fsk_from_env")
    assert client_headers(secrets) == {"X-API-Key": "fsk_from_env"}
    assert client_headers(None) == {"X-API-Key": "fsk_from_env"}


def test_a_client_over_its_limit_gets_429s_with_retry_after_while_another_is_unaffected(provider, keys_file):
    limited = {"nightly-batch": {"inference": Limit(per_s=2, burst=3)}}
    settings = AuthSettings(mode="on", api_keys_file=keys_file, rate_limits=limited, rate_limit_file=keys_file.with_name("limits.bin"))
    batch, other = new_key(keys_file, "nightly-batch", ["inference"]), new_key(keys_file, "retention-app", ["inference"])
    # two workers of one pod: two middlewares over the same table
    workers = [TestClient(Authenticate(echo, settings)), TestClient(Authenticate(echo, settings))]
    answers = [workers[i % 2].post(SCORE, headers={"X-API-Key": batch}).status_code for i in range(6)]
    assert answers[:3] == [200, 200, 200] and 429 in answers[3:], answers
    over = workers[0].post(SCORE, headers={"X-API-Key": batch})
    assert over.status_code == 429 and over.headers["retry-after"] == "1"
    assert over.json()["error"] == "rate_limited" and "'api_key:nightly-batch'" in over.json()["detail"] and batch not in over.text
    assert all(workers[i % 2].post(SCORE, headers={"X-API-Key": other}).status_code == 200 for i in range(10))
    time.sleep(0.6)  # 2 a second: one more request's worth
    assert workers[1].post(SCORE, headers={"X-API-Key": batch}).status_code == 200


def test_while_the_provider_is_down_tokens_are_refused_at_once_with_one_discovery_fetch_per_back_off(provider, keys_file):
    hits = []

    class Down(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(time.monotonic())
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Down)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = AuthSettings(mode="on", issuer=f"http://127.0.0.1:{server.server_port}", api_keys_file=keys_file,
                                rate_limit_file=keys_file.with_name("limits.bin"))
        client = TestClient(Authenticate(echo, settings))
        started = time.monotonic()
        answers = [client.post(SCORE, headers=bearer(provider.token(jti=str(i)))) for i in range(5)]
        assert [a.status_code for a in answers] == [503] * 5 and len(hits) == 1, (len(hits), answers[-1].text)
        assert all(a.json()["error"] == "provider_unavailable" and int(a.headers["retry-after"]) >= 1 for a in answers)
        assert time.monotonic() - started < 2  # no thread held for provider_timeout_s per token
    finally:
        server.shutdown()


def test_a_token_that_names_no_client_is_refused(client, provider):
    token = provider.token(client_id=None, sub=None)  # no client_id, azp or sub
    refused(client.post(SCORE, headers=bearer(token)), 401, "invalid_token", "names no client")


def test_a_token_naming_an_api_key_clients_id_shares_neither_its_bucket_nor_its_limits(provider, keys_file):
    one = Limit(per_s=0.01, burst=1)
    settings = AuthSettings(mode="on", issuer=provider.issuer, api_keys_file=keys_file, jwks_refresh_s=0,
                            rate_limits={"nightly-batch": {"inference": one}, "token:partner": {"inference": one}},
                            rate_limit_file=keys_file.with_name("limits.bin"))
    batch = new_key(keys_file, "nightly-batch", ["inference"])
    client = TestClient(Authenticate(echo, settings))
    assert [client.post(SCORE, headers={"X-API-Key": batch}).status_code for _ in range(2)] == [200, 429]
    impostor = provider.token(client_id="nightly-batch")  # an IdP client named like the key's client
    answers = [client.post(SCORE, headers=bearer(impostor)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3 and answers[0].json() == {"client_id": "nightly-batch", "via": "token"}
    partner = provider.token(client_id="partner")  # a token client's own limits: named with its prefix
    assert [client.post(SCORE, headers=bearer(partner)).status_code for _ in range(2)] == [200, 429]


def test_shared_buckets_refill_at_their_rate_and_keep_clients_apart(tmp_path):
    limit = Limit(per_s=10, burst=5)
    a, b = SharedBuckets(tmp_path / "t.bin", slots=4), SharedBuckets(tmp_path / "t.bin", slots=4)
    assert [a.take("x", limit) if i % 2 else b.take("x", limit) for i in range(5)] == [0.0] * 5
    wait = a.take("x", limit)
    assert 0 < wait <= 0.1
    assert all(b.take(name, limit) == 0.0 for name in ("y", "z", "w", "v", "u"))  # more names than slots: reused
    time.sleep(wait + 0.02)
    assert a.take("x", limit) == 0.0 or b.take("x", limit) == 0.0


def test_the_default_bucket_file_lives_in_a_private_folder_of_the_service_user(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = default_table()
    SharedBuckets(path, slots=4)
    folder = os.lstat(path.parent)
    assert path.parent.parent == tmp_path and stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.geteuid()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_shared_temporary_folder_that_is_not_private_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"fintech-serving-{os.geteuid()}"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)  # another local user made it first, open to all
    with pytest.raises(RuntimeError, match="private"):
        default_table()


def test_a_bucket_file_planted_as_a_symlink_or_by_another_user_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = tmp_path / "link.bin"
    link.symlink_to(victim)
    with pytest.raises(RuntimeError, match="symbolic link"):
        SharedBuckets(link, slots=4)
    assert victim.read_text() == "keep me"  # not extended, not overwritten
    if os.geteuid() == 0:  # only root can give a file away
        planted = tmp_path / "planted.bin"
        planted.write_bytes(b"\xff" * 1024)
        os.chown(planted, 12345, 12345)
        with pytest.raises(RuntimeError, match="owned by"):
            SharedBuckets(planted, slots=4)
