"""The dashboard against a real `bentoml serve` (authentication on, the local key), the real
registry and the small test data: every page through Streamlit's AppTest, the widgets that matter,
and every page in headless Chromium with a screenshot (SCREENSHOTS_DIR keeps them; `make screenshots`
makes the documentation's, docs/dashboard, from the `make up` data instead)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from core.api_keys import client_headers, ensure_local_key
from loadtests.servers import free_port, start, stop
from tests.integration.browser import PAGES, visit_pages
from tests.integration.conftest import latest_rows, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
APP = Path(__file__).resolve().parents[2] / "dashboard"
API = "/api/v1/inference"


@pytest.fixture(scope="module")
def service(settings, served_models, table, tmp_path_factory):
    """The service, as `make up` runs it, with a few fraud and segment predictions in its log."""
    ensure_local_key(settings.secrets_dir)
    process, url = start_server(settings, tmp_path_factory.mktemp("serve"), AUTH_MODE="on")
    headers = client_headers(settings.secrets_dir)
    transaction = {"amount": 2500.0, "merchant_category": "electronics", "channel": "online", "country": "NG", "device_id": "new"}
    for customer in latest_rows(table, 10).index:
        for route, body in (("segment", {"customer_id": customer}),
                            ("fraud-detection", {"customer_id": customer, "transaction": transaction})):
            assert httpx.post(f"{url}{API}/{route}", json=body, headers=headers, timeout=30).status_code == 200
    deadline = time.monotonic() + 60
    while not all(any((settings.data_dir / "inference_log" / f).rglob("*.parquet")) for f in ("fraud", "segment")):
        assert time.monotonic() < deadline, "the inference log was not written"
        time.sleep(0.5)
    yield url
    stop(process)


@pytest.fixture(scope="module")
def environment(settings, service):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATA_DIR", str(settings.data_dir))
        patch.setenv("SERVICE_URL", service)
        for name in ("MLFLOW_TRACKING_URI", "FINTECH_API_KEY", "FINTECH_API_KEY_FILE"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def customer(table):
    return latest_rows(table, 1).index[0]


def run(page: str) -> AppTest:
    return AppTest.from_file(str(APP / "pages" / f"{page}.py"), default_timeout=180).run()


def said(app: AppTest) -> str:
    return " ".join(m.value for m in [*app.error, *app.warning, *app.info])


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_against_the_real_service(page, environment, settings):
    app = run(page)
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    metrics = {m.label: m.value for m in app.metric}
    if page == "overview":
        assert metrics["Customers"] == f"{settings.n_customers:,}"
        assert int(metrics["Requests served"].replace(",", "")) >= 20  # the fixture's own requests at least
    if page == "churn":
        assert int(metrics["Customers scored"].replace(",", "")) > 1000 and metrics["Unknown to the store"] == "0"
        assert len(app.dataframe[0].value) == 20  # the top-N table, each with a reason and an action
        assert app.dataframe[0].value["action"].str.len().min() > 0
    if page == "fraud":
        assert metrics["Review from"].endswith("%") and metrics["Block from"].endswith("%")
        counts = [int(metrics[outcome].replace(",", "")) for outcome in ("Accept", "Review", "Block")]
        assert sum(counts) >= 10  # the fixture's ten transactions at least, each under one outcome
    if page == "performance":
        assert metrics["Champion (registry / served)"] == "1 / 1"
    assert all(c.value.startswith("Source: ") for c in app.caption if c.value.startswith("Source"))
    assert any(c.value.startswith("Source: ") for c in app.caption), "the page does not say where its numbers come from"


def test_the_app_opens_on_the_overview(environment):
    app = AppTest.from_file(str(APP / "app.py"), default_timeout=180).run()
    assert not app.exception and app.title[0].value == "Overview"


def test_search_finds_a_known_customer_and_says_so_for_an_unknown_one(environment, customer):
    app = run("customer")
    app.text_input(key="customer_query").input(customer).run()
    assert not app.exception and not app.error, [*app.exception, *app.error]
    assert app.success[0].value == f"Found {customer}."
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Customer"] == customer and metrics["Risk level"] in ("low", "medium", "high", "critical")
    assert metrics["Churn probability"].endswith("%") and metrics["Segment"]
    app.text_input(key="customer_query").input("NOBODY-HERE").run()
    assert not app.exception and not app.success
    assert app.warning[0].value == "No customer id contains 'NOBODY-HERE'."
    partial = customer[:-2]
    app.text_input(key="customer_query").input(partial.lower()).run()
    assert customer in app.selectbox(key="customer_pick").options


def test_the_fraud_form_returns_an_outcome_and_the_rules_it_met(environment, customer):
    app = run("fraud")
    app.text_input(key="fraud_customer").input(customer)
    app.number_input(key="fraud_amount").set_value(9000.0)
    app.button[0].click().run()
    assert not app.exception and not app.error, [*app.exception, *app.error]
    metrics = {m.label: m.value for m in app.metric}
    probability, review, block = (float(metrics[k].rstrip("%")) for k in ("Fraud probability", "Review from", "Block from"))
    assert metrics["Outcome"] == ("block" if probability >= block else "review" if probability >= review else "accept")
    app.number_input(key="fraud_amount").set_value(20_000.0)  # over the large-amount rule's limit
    app.button[0].click().run()
    assert metrics_of(app)["Outcome"] in ("review", "block")
    assert any("RUL04" in m.value and "large-amount" in m.value for m in app.markdown)


def metrics_of(app) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def test_every_page_in_a_real_browser(environment, settings, customer, tmp_path):
    """Debian's Chromium, headless, driven by Playwright: every page opens, none shows an error box."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(APP / "app.py"), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    process = start(command, port, "/_stcore/health", tmp_path / "dashboard.log", dict(os.environ))
    try:
        out = Path(os.environ.get("SCREENSHOTS_DIR", tmp_path / "screenshots"))
        visits = visit_pages(f"http://127.0.0.1:{port}", out, customer)
    finally:
        stop(process)
    assert [v.page for v in visits] == list(PAGES)
    assert {v.page: v.errors for v in visits if v.errors} == {}
    assert all(v.screenshot.stat().st_size > 20_000 for v in visits)  # a page with content, not a blank one
