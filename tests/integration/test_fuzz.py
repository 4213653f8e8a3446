"""Hostile input against a real `bentoml serve`: schemathesis over the service's own OpenAPI
documents, then the inputs a schema fuzzer does not send (bodies over the cap, bytes that are not
UTF-8, deep nesting, NaN and huge numbers, hostile headers). No input may get a 5xx or a
traceback; a wrong one gets a 4xx whose JSON body names the field or the problem; and the server
answers a normal request afterwards."""

from __future__ import annotations

import http.client
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import schemathesis
from schemathesis import engine
from schemathesis.engine import Status, events

from core.feature_sets import CHURN_FEATURES
from tests.integration.conftest import latest_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]
API = "/api/v1/inference"
CAP = 1_048_576  # SERVING_MAX_BODY_BYTES's default
# Budget (2 cores): up to FUZZ_EXAMPLES generated examples per operation in the fuzzing phase (50 in
# `make test`, 100 in `make faults`), plus the coverage phase's cases (each boundary and each way to
# break each field, a few hundred in all), for each of the two documents: at 100, about 1,000
# requests and 10-20 s each here.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@dataclass
class Served:
    url: str
    log: Path
    customers: list[str]

    @property
    def customer(self) -> str:
        return self.customers[0]


@pytest.fixture(scope="module")
def served(shared_server, table):
    """The session's shared server (AUTH_MODE=off: hostile credentials are test_auth.py's)."""
    return Served(shared_server.url, shared_server.log, list(latest_rows(table, 5).index))


def assert_still_serving(served: Served) -> None:
    """A normal request is answered, and the server logged no traceback."""
    response = httpx.post(f"{served.url}{API}/churn-score", json={"customer_id": served.customer}, timeout=30)
    assert response.status_code == 200, response.text
    assert "Traceback" not in served.log.read_text()


@dataclass
class FuzzRun:
    fuzzed: set[str] = field(default_factory=set)  # operations the fuzzing phase ran examples on
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # a check that failed, with the request that failed it
    errors: list[str] = field(default_factory=list)  # an operation schemathesis could not test
    stop_reason: str = ""


def fuzz(url: str, document: str, customers: list[str]) -> FuzzRun:
    """schemathesis's engine (what `st run` drives) over one document: the coverage phase, then up
    to MAX_EXAMPLES generated examples per operation, positive and negative, with only the checks
    this test is about. Half the customer ids it sends are known ones, so the scoring routes'
    answers are checked against their schemas too, not only their refusals."""
    config = schemathesis.Config.from_dict({
        "seed": 0,  # the same cases every run: a failure here is reproducible
        "base-url": url,
        "dictionaries": {"customers": {"values": customers}},
        "parameters": {f"{where}.customer_id": {"dictionary": "customers", "probability": 0.5} for where in ("body", "query")},
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
        "phases": {"stateful": {"enabled": False}},  # no links between these operations
        "checks": {"enabled": False, "not_a_server_error": {"enabled": True},
                   "response_schema_conformance": {"enabled": True}},
    })
    schema = schemathesis.openapi.from_url(f"{url}{document}", config=config)
    run = FuzzRun()
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            if event.phase.value == "fuzzing" and event.status in (Status.SUCCESS, Status.FAILURE) and event.recorder.cases:
                run.fuzzed.add(event.label)
            for interaction in event.recorder.interactions.values():
                run.requests += 1
                run.statuses[interaction.response.status_code if interaction.response else "no response"] += 1
            for checks in event.recorder.checks.values():
                run.failures += [f"{event.label}: {c.failure_info.failure.title}: {c.failure_info.failure.message[:500]}\n"
                                 f"{c.failure_info.code_sample}" for c in checks if c.status == Status.FAILURE]
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"{event.label}: {event.value}"[:2000])
        elif isinstance(event, events.FatalError):
            run.errors.append(f"the run stopped: {event.exception}"[:2000])
        elif isinstance(event, events.EngineFinished):
            run.stop_reason = event.stop_reason.value
    return run


@pytest.mark.parametrize("document", ["/openapi.json", "/docs.json"])
def test_schemathesis_fuzzes_every_operation_and_gets_no_server_error(served, document):
    """/openapi.json is FastAPI's document of the app (OpenAPI 3.1, the one /docs shows);
    /docs.json is BentoML's (OpenAPI 3.0), which adds its own /livez, /readyz, /healthz and /metrics."""
    paths = httpx.get(f"{served.url}{document}", timeout=30).json()["paths"]
    operations = {f"{method.upper()} {path}" for path, item in paths.items() for method in item if method in METHODS}
    started = time.monotonic()
    run = fuzz(served.url, document, served.customers)
    seconds = time.monotonic() - started

    assert run.errors == []
    assert run.stop_reason == "completed"
    assert run.fuzzed == operations  # an operation whose schema cannot be read is not fuzzed: it fails here
    server_errors = sum(n for status, n in run.statuses.items() if isinstance(status, int) and status >= 500)
    assert server_errors == 0 and "no response" not in run.statuses, run.statuses
    assert run.failures == [], "\n\n".join(run.failures[:5])
    assert_still_serving(served)
    print(f"{document}: {len(operations)} operations, {run.requests} requests in {seconds:.1f} s, "
          f"statuses {dict(sorted(run.statuses.items(), key=str))}")


FEATURE = CHURN_FEATURES[0]
TRANSACTION = '{"amount": %s, "merchant_category": "groceries", "channel": "pos", "country": "GB", "device_id": "d1"}'
JSON = {"content-type": "application/json"}


def churn_body(features: str) -> bytes:
    return b'{"customer_id": "%%s", "features": {"%s": %s}}' % (FEATURE.encode(), features.encode())


def fraud_body(amount: str) -> bytes:
    return ('{"customer_id": "%%s", "transaction": %s}' % (TRANSACTION % amount)).encode()


# (route, body with %s for a known customer id, headers, status, field named, words of the problem)
BODIES = {
    "over the cap": ("churn-batch", b'{"customer_ids": ["%s"' + b', "C1"' * (CAP // 6 + 100) + b"]}", JSON,
                     413, "body", "1,048,576 bytes"),
    "invalid UTF-8": ("churn-score", b'{"customer_id": "%s\xff\xfe"}', JSON, 422, "body", "UTF-8"),
    "latin-1 declared as such": ("churn-score", '{"customer_id": "%s\xe9"}'.encode("latin-1"),
                                 {"content-type": "application/json; charset=latin-1"}, 422, "body", "UTF-8"),
    "10,000 levels of [": ("churn-score", b"[" * 10_000, JSON, 422, "body", "too deeply"),
    "10,000 levels of objects": ("churn-score", b'{"a": ' * 10_000 + b"1" + b"}" * 10_000, JSON, 422, "body", "too deeply"),
    "500 levels in a field": ("churn-score", b'{"customer_id": "%s", "features": ' + b"[" * 500 + b"]" * 500 + b"}", JSON,
                              422, "features", "dictionary"),
    "NaN feature": ("churn-score", churn_body("NaN"), JSON, 422, f"features.{FEATURE}", "finite"),
    "Infinity feature": ("churn-score", churn_body("Infinity"), JSON, 422, f"features.{FEATURE}", "finite"),
    "-Infinity feature": ("churn-score", churn_body("-Infinity"), JSON, 422, f"features.{FEATURE}", "finite"),
    "1e400 feature": ("churn-score", churn_body("1e400"), JSON, 422, f"features.{FEATURE}", "finite"),
    "10**400 feature": ("churn-score", churn_body(str(10**400)), JSON, 422, f"features.{FEATURE}", ""),
    "NaN amount": ("fraud-detection", fraud_body("NaN"), JSON, 422, "transaction.amount", "finite"),
    "Infinity amount": ("fraud-detection", fraud_body("Infinity"), JSON, 422, "transaction.amount", ""),
    "-Infinity amount": ("fraud-detection", fraud_body("-Infinity"), JSON, 422, "transaction.amount", ""),
    "1e400 amount": ("fraud-detection", fraud_body("1e400"), JSON, 422, "transaction.amount", ""),
    "10**400 amount": ("fraud-detection", fraud_body(str(10**400)), JSON, 422, "transaction.amount", ""),
    "1e-400 amount (0)": ("fraud-detection", fraud_body("1e-400"), JSON, 422, "transaction.amount", "greater than 0"),
    "5,000-digit amount": ("fraud-detection", fraud_body("1" + "0" * 5000), JSON, 422, "body", "too many digits"),
    "unicode id": ("churn-score", '{"customer_id": "Ĉ0000001🙂"}'.encode(), JSON, 422, "customer_id", "pattern"),
    "escaped unicode id": ("segment", b'{"customer_id": "\\u0108\\ud83d\\ude42"}', JSON, 422, "customer_id", "pattern"),
    "lone surrogate id": ("churn-score", b'{"customer_id": "\\ud800"}', JSON, 422, "customer_id", ""),
    "NUL in id": ("churn-score", b'{"customer_id": "%s\\u0000"}', JSON, 422, "customer_id", "pattern"),
    "100,000-character id": ("churn-score", b'{"customer_id": "' + b"C" * 100_000 + b'"}', JSON, 422, "customer_id", "64"),
    "unicode id in a batch": ("churn-batch", '{"customer_ids": ["%s", "Ĉ1"]}'.encode(), JSON, 422, "customer_ids.1", ""),
    "text/plain": ("churn-score", b'{"customer_id": "%s"}', {"content-type": "text/plain"}, 422, "body", ""),
    "form": ("churn-score", b"customer_id=%s", {"content-type": "application/x-www-form-urlencoded"}, 422, "body", ""),
    "multipart": ("fraud-detection", b'--x\r\nContent-Disposition: form-data; name="customer_id"\r\n\r\n%s\r\n--x--\r\n',
                  {"content-type": "multipart/form-data; boundary=x"}, 422, "body", ""),
    "no Content-Type": ("churn-score", b'{"customer_id": "%s"}', {}, 422, "body", ""),
    "a gzip body the service does not decode": ("churn-score", b"\x1f\x8b\x08\x00%s", {**JSON, "content-encoding": "gzip"},
                                                422, "body", "UTF-8"),
}


@pytest.mark.parametrize("case", BODIES)
def test_a_hostile_body_is_a_4xx_naming_the_problem(served, case):
    route, body, headers, status, named, words = BODIES[case]
    body = body.replace(b"%s", served.customer.encode(), 1)
    response = httpx.post(f"{served.url}{API}/{route}", content=body, headers=headers, timeout=60)
    assert response.status_code == status, response.text[:500]
    error = response.json()
    assert named in [f["field"] for f in error["fields"]], error
    assert words.lower() in (error["detail"] + " ".join(f["message"] for f in error["fields"])).lower(), error
    assert_still_serving(served)


def test_a_chunked_body_over_the_cap_is_cut_off_with_a_413(served):
    def chunks():  # no Content-Length: the cap is counted as the body arrives
        yield b'{"customer_ids": ["C1"'
        for _ in range(CAP // 60_000 + 1):
            yield b', "C1"' * 10_000

    response = httpx.post(f"{served.url}{API}/churn-batch", content=chunks(), headers=JSON, timeout=60)
    assert response.status_code == 413 and response.json()["error"] == "body_too_large", response.text[:500]
    assert_still_serving(served)


def send_raw(served: Served, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """One request as given, which httpx would refuse to send (a lying Content-Length, control
    characters in a header)."""
    url = urlparse(served.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.putrequest(method, path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_sent(served):
    """A client that claims 100 GB gets its 413 at once; the server does not wait for the bytes."""
    status, body = send_raw(served, "POST", f"{API}/churn-score",
                            {**JSON, "Content-Length": str(100 * 10**9)}, b"{")
    assert status == 413 and json.loads(body)["error"] == "body_too_large", body
    assert_still_serving(served)


def test_the_largest_valid_body_fits_under_the_cap(served):
    """churn-batch's 10,000 ids of 64 characters: about 680 KB, answered (every id unknown)."""
    ids = [f"{i:064d}" for i in range(10_000)]
    response = httpx.post(f"{served.url}{API}/churn-batch", json={"customer_ids": ids}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["unknown"] == 10_000


# "very long" is far past every header's own limit and under the service's cap on all headers
# (SERVING_MAX_HEADER_BYTES, 8 KiB): the route refuses it; past the cap, nothing reads it (431)
HOSTILE = {"very long": "7" * 6_000, "past the header cap": "7" * 100_000, "non-ASCII": "Ĉhampion🙂", "empty": ""}


def header_value(value: str) -> bytes:
    return value.encode()  # UTF-8 on the wire; the server reads header bytes as latin-1


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(("header", "status", "named"), [
    ("X-Request-ID", 422, "header.x-request-id"),
    ("X-Model-Version", 422, "X-Model-Version"),  # a version that is not served, or too long a header
    ("Content-Type", 422, "body"),
])
def test_a_hostile_header_on_a_scoring_route_is_a_422_naming_it(served, header, status, named, value):
    if header == "X-Model-Version" and value == "empty":
        status = 200  # an empty pin is no pin: the canary split answers
    if value == "past the header cap":
        status, named = 431, "headers"
    headers = [(header, header_value(HOSTILE[value]))] + ([] if header == "Content-Type" else list(JSON.items()))
    response = httpx.post(f"{served.url}{API}/churn-score", content=json.dumps({"customer_id": served.customer}),
                          headers=headers, timeout=30)
    assert response.status_code == status, response.text[:500]
    if status != 200:
        fields = [f["field"] for f in response.json()["fields"]]
        assert any(named.lower() in f.lower() for f in fields), fields
    assert_still_serving(served)


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("header", ["traceparent", "tracestate", "baggage"])
def test_hostile_trace_headers_are_ignored(served, header, value):
    """BentoML's tracing middleware reads these on every route it traces (all but the scoring routes)."""
    for path in ("/health", "/ready", "/models/status"):
        response = httpx.get(f"{served.url}{path}", headers=[(header, header_value(HOSTILE[value]))], timeout=30)
        assert response.status_code == (431 if value == "past the header cap" else 200), (path, response.text[:500])
    assert_still_serving(served)


@pytest.mark.parametrize("customer_id", ["Ĉ0000001🙂", "%FF%FE", "C" * 10_000, ""])
def test_a_hostile_customer_id_in_the_explain_query_is_a_422(served, customer_id):
    response = httpx.get(f"{served.url}{API}/explain?customer_id={customer_id}", timeout=30)
    assert response.status_code == 422, response.text[:500]
    assert response.json()["fields"][0]["field"] == "query.customer_id"
    assert_still_serving(served)


def test_a_header_the_http_layer_cannot_parse_is_a_400_before_the_app(served):
    """Control characters in a header value: uvicorn refuses the request itself (plain text)."""
    status, _ = send_raw(served, "GET", "/health", {"X-Request-ID": "a\x01b"})
    assert status == 400
    assert_still_serving(served)
