"""Every page of a running dashboard in a real browser: headless Chromium (Debian's package),
driven by Playwright. Each page is opened, its title waited for, its error boxes read, and a
screenshot of the whole page saved. The dashboard test calls it; so does `make screenshots`:

    python -m tests.integration.browser --url http://127.0.0.1:8501 --out docs/dashboard
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# headless, and nothing that reaches beyond this machine (its connections would be refused)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PAGES = {"overview": ("", "Overview"), "customer": ("customer", "Customer"), "churn": ("churn", "Churn risk"),
         "fraud": ("fraud", "Fraud"), "segments": ("segments", "Segments"), "performance": ("performance", "Model performance")}
ERROR_BOXES = '[data-testid="stException"], [data-testid="stAlertContentError"]'
TIMEOUT_MS = 120_000


@dataclass
class Visit:
    page: str
    title: str
    errors: list[str]
    screenshot: Path


def _settle(page) -> None:
    """Wait until the script run has finished: Streamlit shows its status widget while it runs."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)  # charts draw after the run


def _act(page, name: str, customer_id: str) -> None:
    """What a person does first on the pages with a form: search for a customer, score a transaction."""
    if name == "customer":
        page.get_by_label("Customer id, or part of one").fill(customer_id)
        page.keyboard.press("Enter")
    elif name == "fraud":
        page.get_by_label("Customer id").fill(customer_id)
        page.get_by_role("button", name="Score").click()


def _fit_to_content(page) -> None:
    """The page scrolls inside its main area: make the window as tall as the content, until it stops growing."""
    height = 0
    for _ in range(5):
        content = int(page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight"))
        if content <= height:
            return
        height = min(content, 8_000)
        page.set_viewport_size({"width": 1400, "height": height})
        page.wait_for_timeout(500)


def visit_pages(url: str, out: Path, customer_id: str) -> list[Visit]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    visits = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name, (path, title) in PAGES.items():
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.goto(f"{url.rstrip('/')}/{path}")
            page.locator('[data-testid="stMainBlockContainer"] h1').filter(has_text=title).wait_for(timeout=TIMEOUT_MS)
            _settle(page)
            _act(page, name, customer_id)
            _settle(page)
            _fit_to_content(page)
            errors = [box.inner_text()[:300] for box in page.locator(ERROR_BOXES).all()]
            shot = out / f"{name}.png"
            page.screenshot(path=str(shot))
            visits.append(Visit(name, title, errors, shot))
        browser.close()
    return visits


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshot every page of a running dashboard in headless Chromium.")
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="The dashboard.")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard"), help="Where the screenshots go.")
    parser.add_argument("--customer", default="C0000001", help="The customer to search for and score a transaction of.")
    args = parser.parse_args()
    failed = False
    for visit in visit_pages(args.url, args.out, args.customer):
        print(f"{visit.page}: {visit.screenshot}" + (f"  ERRORS: {visit.errors}" if visit.errors else ""))
        failed |= bool(visit.errors)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
