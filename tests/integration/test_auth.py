"""Authentication against a real OpenID provider (node-oidc-provider, tests/oidc) and a real
`bentoml serve` with AUTH_MODE=on and two workers: tokens from the client-credentials grant, scopes
per route, key rotation at the provider, API keys revoked while the service runs, rate limits
shared by the workers, hostile headers, and no credential in anything the service writes."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import jwt
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core.api_keys import new_key, revoke
from loadtests.servers import free_port, stop
from tests.integration.conftest import latest_rows, start_server, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OIDC = Path(__file__).resolve().parents[1] / "oidc"
SCORE = "/api/v1/inference/churn-score"
LIMITED = {"burst-client": {"inference": {"per_s": 2, "burst": 5}}}
SENT: list[str] = []  # every token and key this module sends: none may appear in what the service writes
CLIENTS = [
    {"client_id": "retention-app", "client_secret": "retention-secret", "scope": "inference explain"},
    {"client_id": "nightly-batch", "client_secret": "batch-secret", "scope": "inference"},
    {"client_id": "platform-ops", "client_secret": "ops-secret", "scope": "inference explain admin"},
]


class OpenIdProvider:
    """node-oidc-provider on a free port, signing with one RSA key; `rotate` restarts it with a new one."""

    def __init__(self, workdir: Path):
        self.workdir, self.port = workdir, free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        (workdir / "clients.json").write_text(json.dumps(CLIENTS))
        self.process: subprocess.Popen | None = None

    def start(self, kid: str) -> None:
        if not (OIDC / "node_modules" / "oidc-provider").exists():
            pytest.fail("the test OpenID provider is not installed: run `make oidc-provider` (npm)")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key)), "kid": kid, "alg": "RS256", "use": "sig"}
        (self.workdir / "jwks.json").write_text(json.dumps({"keys": [private]}))
        self.process = subprocess.Popen([shutil.which("node"), str(OIDC / "provider.mjs")], cwd=OIDC,
                                        stdout=(self.workdir / "provider.log").open("a"), stderr=subprocess.STDOUT,
                                        env={**os.environ, "PORT": str(self.port), "JWKS_FILE": str(self.workdir / "jwks.json"),
                                             "CLIENTS_FILE": str(self.workdir / "clients.json")})
        wait_for(lambda: _answers(f"{self.issuer}/.well-known/openid-configuration"), "the OpenID provider", timeout_s=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def rotate(self, kid: str) -> None:
        self.stop()
        self.start(kid)

    def token(self, client_id: str, scope: str) -> str:
        secret = next(c["client_secret"] for c in CLIENTS if c["client_id"] == client_id)
        answer = httpx.post(f"{self.issuer}/token", data={"grant_type": "client_credentials", "scope": scope},
                            auth=(client_id, secret), timeout=10)
        answer.raise_for_status()
        SENT.append(answer.json()["access_token"])
        return SENT[-1]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    p = OpenIdProvider(tmp_path_factory.mktemp("oidc"))
    p.start("k1")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    return tmp_path_factory.mktemp("keys") / "api_keys.json"


@pytest.fixture(scope="module")
def url(settings, served_models, provider, keys_file, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    process, url = start_server(settings, work, ONLINE_STORE="sqlite", AUTH_MODE="on", SERVING_WORKERS="2",
                                AUTH_ISSUER=provider.issuer, AUTH_API_KEYS_FILE=str(keys_file), AUTH_JWKS_REFRESH_S="1",
                                AUTH_RATE_LIMITS=json.dumps(LIMITED), SERVING_REGISTRY_POLL_S="0")
    yield url
    stop(process)


@pytest.fixture(scope="module")
def customer(table):
    return latest_rows(table, 1).index[0]


def score(url: str, customer: str, **headers) -> httpx.Response:
    return httpx.post(f"{url}{SCORE}", json={"customer_id": customer}, headers=headers, timeout=30)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_from_the_provider_scores_and_its_scopes_decide_the_routes(url, provider, customer):
    token = provider.token("retention-app", "inference explain")
    assert score(url, customer, **bearer(token)).status_code == 200
    assert httpx.get(f"{url}/api/v1/inference/explain", params={"customer_id": customer}, headers=bearer(token),
                     timeout=30).status_code == 200
    refused = httpx.post(f"{url}/admin/reload", headers=bearer(token), timeout=30)
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"] and 'scope="admin"' in refused.headers["www-authenticate"]
    admin = provider.token("platform-ops", "inference admin")
    assert httpx.post(f"{url}/admin/reload", headers=bearer(admin), timeout=60).status_code == 200


def test_the_inference_log_names_the_client_of_each_prediction(url, provider, customer, settings):
    token = provider.token("nightly-batch", "inference")
    assert score(url, customer, **bearer(token), **{"X-Request-ID": "audited-1"}).status_code == 200

    def logged():
        log = settings.data_dir / "inference_log" / "churn"
        return log.exists() and pd.read_parquet(log, filters=[("request_id", "==", "audited-1")])

    wait_for(lambda: logged() is not False and len(logged()) == 1, "the request in the inference log", timeout_s=30)
    assert logged()[["client_id", "scope"]].iloc[0].tolist() == ["nightly-batch", "inference"]


def test_a_client_without_the_explain_scope_is_refused_explain(url, provider, customer):
    token = provider.token("nightly-batch", "inference")
    assert score(url, customer, **bearer(token)).status_code == 200
    answer = httpx.get(f"{url}/api/v1/inference/explain", params={"customer_id": customer}, headers=bearer(token), timeout=30)
    assert answer.status_code == 403 and "'explain'" in answer.json()["detail"]


def test_the_probes_and_metrics_stay_open_and_the_rest_needs_a_credential(url, customer):
    for path in ("/health", "/ready", "/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{url}{path}", timeout=30).status_code == 200, path
    answer = score(url, customer)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == 'Bearer realm="fintech-serving"'
    assert httpx.get(f"{url}/models/status", timeout=30).status_code == 401


def test_the_service_follows_a_key_rotation_at_the_provider(url, provider, customer):
    before = provider.token("retention-app", "inference")
    assert score(url, customer, **bearer(before)).status_code == 200
    provider.rotate("k2")
    after = provider.token("retention-app", "inference")
    assert jwt.get_unverified_header(after)["kid"] == "k2"
    time.sleep(1.1)  # AUTH_JWKS_REFRESH_S: the least time between two fetches of the keys
    assert all(score(url, customer, **bearer(after)).status_code == 200 for _ in range(4))  # both workers


def make_key(keys_file: Path, client_id: str, scopes: list[str]) -> str:
    SENT.append(new_key(keys_file, client_id, scopes))
    return SENT[-1]


def test_an_api_key_works_until_it_is_revoked_while_the_service_runs(url, keys_file, customer):
    key = make_key(keys_file, "legacy-core-banking", ["inference"])
    wait_for(lambda: score(url, customer, **{"X-API-Key": key}).status_code == 200, "the new key to be accepted", timeout_s=10)
    assert all(score(url, customer, **{"X-API-Key": key}).status_code == 200 for _ in range(4))
    revoke(keys_file, "legacy-core-banking")
    wait_for(lambda: all(score(url, customer, **{"X-API-Key": key}).status_code == 401 for _ in range(4)),
             "the revoked key to be refused by every worker", timeout_s=10)
    answer = score(url, customer, **{"X-API-Key": key})
    assert answer.json()["error"] == "invalid_token" and key not in answer.text


def test_forged_tokens_are_refused_by_the_real_service(url, provider, customer):
    token = provider.token("retention-app", "inference")
    head, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    widened = jwt.utils.base64url_encode(json.dumps({**claims, "scope": "inference explain admin"}).encode()).decode()
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    for forged, words in ((f"{head}.{widened}.{signature}", "does not verify"), (f"{head}.{payload}.{flipped}", "does not verify"),
                          ("e30.e30.", "algorithm"), (token[:-1], "well-formed")):  # 341 characters: not base64
        answer = score(url, customer, **bearer(forged))
        assert answer.status_code == 401 and words in answer.json()["detail"], (forged, answer.text)
        assert forged not in answer.text


# what HTTP allows in a header value: visible characters, inner spaces
VISIBLE = st.characters(min_codepoint=33, max_codepoint=255, exclude_characters="\x7f")
WORDS = st.lists(st.text(alphabet=VISIBLE, min_size=1, max_size=80), max_size=4).map(" ".join)


@hypothesis_settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")), deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["Authorization", "X-API-Key"]),
       st.one_of(WORDS, WORDS.map(lambda t: "Bearer " + t), WORDS.map(lambda t: "Bearer " + t.replace(" ", "."))).map(str.strip))
def test_any_credential_header_is_a_4xx_never_a_500(url, customer, header, value):
    answer = score(url, customer, **{header: value.encode("latin-1")})
    assert answer.status_code in (400, 401), (header, value, answer.status_code, answer.text)


def test_a_client_over_its_limit_gets_429s_on_every_worker_while_another_is_unaffected(url, keys_file, customer):
    """burst-client may send 5 at once, then 2 a second, over both workers together: with a bucket
    per worker it would get about twice that."""
    limited, other = make_key(keys_file, "burst-client", ["inference"]), make_key(keys_file, "retention-batch", ["inference"])
    wait_for(lambda: score(url, customer, **{"X-API-Key": other}).status_code == 200, "the new keys", timeout_s=10)
    time.sleep(3)  # the bucket refills to its burst
    started = time.monotonic()
    answers = [score(url, customer, **{"X-API-Key": limited}) for _ in range(16)]  # a new connection each: both workers
    elapsed = time.monotonic() - started
    accepted = sum(a.status_code == 200 for a in answers)
    assert {a.status_code for a in answers} == {200, 429}
    assert 5 <= accepted <= 5 + 2 * elapsed + 1, (accepted, elapsed)
    over = next(a for a in answers if a.status_code == 429)
    assert over.json()["error"] == "rate_limited" and int(over.headers["retry-after"]) >= 1 and limited not in over.text
    assert all(score(url, customer, **{"X-API-Key": other}).status_code == 200 for _ in range(16))
    time.sleep(1.1)  # two more requests' worth
    assert score(url, customer, **{"X-API-Key": limited}).status_code == 200


def test_no_token_or_key_is_in_the_logs_metrics_reports_or_openapi(url, settings, tmp_path_factory):
    """Everything the service wrote or serves, searched for each credential this module sent."""
    assert len(SENT) >= 10
    served = [httpx.get(f"{url}{path}", timeout=30).text for path in ("/metrics", "/openapi.json", "/docs.json")]
    logs = list(tmp_path_factory.getbasetemp().glob("serve*/serve-*.log"))  # every server of the session
    written = {p: p.read_bytes() for root in (settings.data_dir / "inference_log", settings.data_dir / "audit")
               if root.exists() for p in root.rglob("*") if p.is_file()} | {p: p.read_bytes() for p in logs}
    assert logs and any(p.suffix == ".parquet" for p in written)
    for secret in SENT:
        assert not any(secret in text for text in served), secret[:12]
        leaked = [p for p, content in written.items() if secret.encode() in content]
        assert leaked == [], (secret[:12], leaked)
    secrets = {c["client_secret"] for c in CLIENTS}
    assert not any(s in text for s in secrets for text in served)
