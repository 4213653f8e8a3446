"""The service's public HTTP API, as the dashboard calls it: the only place it gets a score or an
explanation from. One service answers every family by default (what `make up` runs); where each
family is its own Deployment (the prod overlay), `family_urls` names the one that answers it.

Failures become two errors a page can show as they are:

    ServiceDown     the service did not answer, or refused the dashboard's credential
    Refused         it answered with a client error (unknown customer, a field out of range)
"""

from __future__ import annotations

import httpx

API = "/api/v1/inference"


class ServiceDown(RuntimeError):
    """The service cannot be used: not answering, or refusing the dashboard's credential."""


class Refused(RuntimeError):
    """The service refused one request; `error` is its code (unknown_customer, ...)."""

    def __init__(self, error: str, detail: str):
        super().__init__(detail)
        self.error, self.detail = error, detail


class ServiceClient:
    def __init__(self, url: str, headers: dict[str, str], timeout_s: float, family_urls: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.urls = {family: u.rstrip("/") for family, u in (family_urls or {}).items()}
        self.default = url.rstrip("/")
        self.http = httpx.Client(headers=headers, timeout=timeout_s, transport=transport)

    def url(self, family: str | None = None) -> str:
        return self.urls.get(family, self.default) if family else self.default

    def _services(self) -> list[str]:
        """Every distinct service: the default one, unless every family has its own."""
        from core.families import NAMES

        urls = [self.url(family) for family in NAMES]
        return list(dict.fromkeys(urls))

    def _get(self, url: str, path: str, **kwargs) -> httpx.Response:
        try:
            return self.http.request(kwargs.pop("method", "GET"), f"{url}{path}", **kwargs)
        except httpx.HTTPError as e:
            raise ServiceDown(f"The scoring service at {url} is not answering ({type(e).__name__}). "
                              "Start it with `make serve`, or point SERVICE_URL at it.") from e

    def _call(self, url: str, method: str, path: str, **kwargs) -> dict:
        response = self._get(url, path, method=method, **kwargs)
        if response.status_code in (401, 403):
            raise ServiceDown(f"The scoring service at {url} refused the dashboard's credential "
                              f"({response.status_code}): set FINTECH_API_KEY_FILE to a key with the inference and "
                              "explain scopes (`make api-key` makes the local one).")
        try:
            body = response.json()
        except ValueError:
            body = {}
        if 400 <= response.status_code < 500:
            raise Refused(body.get("error", str(response.status_code)), body.get("detail", response.text[:200]))
        if response.status_code >= 500:
            raise ServiceDown(f"The scoring service at {url} failed ({response.status_code}): "
                              f"{body.get('detail', response.text[:200])}")
        return body

    def status(self) -> dict:
        """Per family: the live versions, the canary share and shadow mode (/models/status of each service)."""
        status: dict = {}
        for url in self._services():
            answer = self._call(url, "GET", "/models/status")
            status.update({family: state for family, state in answer.items() if self.url(family) == url})
        return status

    def request_summary(self) -> dict:
        """Requests, errors and latency per route and version since the workers started (JSON), over every service."""
        routes: list[dict] = []
        for url in self._services():
            routes += self._call(url, "GET", f"{API}/metrics")["routes"]
        return {"routes": routes}

    def prometheus(self, family: str) -> str:
        """The Prometheus metrics of the service answering `family`, as text: the canary's evidence."""
        url = self.url(family)
        response = self._get(url, "/metrics")
        if response.status_code != 200:
            raise ServiceDown(f"The scoring service's /metrics at {url} answered {response.status_code}.")
        return response.text

    def churn_score(self, customer_id: str) -> dict:
        return self._call(self.url("churn"), "POST", f"{API}/churn-score", json={"customer_id": customer_id})

    def churn_batch(self, customer_ids: list[str]) -> dict:
        return self._call(self.url("churn"), "POST", f"{API}/churn-batch", json={"customer_ids": customer_ids})

    def explain(self, customer_id: str | None = None) -> dict:
        """SHAP values of one customer's churn score; without an id, the model's global importance."""
        return self._call(self.url("churn"), "GET", f"{API}/explain", params={"customer_id": customer_id} if customer_id else None)

    def segment(self, customer_id: str) -> dict:
        return self._call(self.url("segment"), "POST", f"{API}/segment", json={"customer_id": customer_id})

    def fraud(self, customer_id: str, transaction: dict) -> dict:
        return self._call(self.url("fraud"), "POST", f"{API}/fraud-detection", json={"customer_id": customer_id, "transaction": transaction})
