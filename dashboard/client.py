"""The service's public HTTP API, as the dashboard calls it: the only place it gets a score or an
explanation from. Failures become two errors a page can show as they are:

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
    def __init__(self, url: str, headers: dict[str, str], timeout_s: float, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, transport=transport)

    def _call(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ServiceDown(f"The scoring service at {self.url} is not answering ({type(e).__name__}). "
                              "Start it with `make serve`, or point SERVICE_URL at it.") from e
        if response.status_code in (401, 403):
            raise ServiceDown(f"The scoring service at {self.url} refused the dashboard's credential "
                              f"({response.status_code}): set FINTECH_API_KEY_FILE to a key with the inference and "
                              "explain scopes (`make api-key` makes the local one).")
        try:
            body = response.json()
        except ValueError:
            body = {}
        if 400 <= response.status_code < 500:
            raise Refused(body.get("error", str(response.status_code)), body.get("detail", response.text[:200]))
        if response.status_code >= 500:
            raise ServiceDown(f"The scoring service at {self.url} failed ({response.status_code}): "
                              f"{body.get('detail', response.text[:200])}")
        return body

    def status(self) -> dict:
        """Per family: the live versions, the canary share and shadow mode (/models/status)."""
        return self._call("GET", "/models/status")

    def request_summary(self) -> dict:
        """Requests, errors and latency per route and version since the workers started (JSON)."""
        return self._call("GET", f"{API}/metrics")

    def prometheus(self) -> str:
        """The service's Prometheus metrics, as text: the canary's evidence."""
        try:
            response = self.http.get("/metrics")
        except httpx.HTTPError as e:
            raise ServiceDown(f"The scoring service at {self.url} is not answering ({type(e).__name__}).") from e
        if response.status_code != 200:
            raise ServiceDown(f"The scoring service's /metrics answered {response.status_code}.")
        return response.text

    def churn_score(self, customer_id: str) -> dict:
        return self._call("POST", f"{API}/churn-score", json={"customer_id": customer_id})

    def churn_batch(self, customer_ids: list[str]) -> dict:
        return self._call("POST", f"{API}/churn-batch", json={"customer_ids": customer_ids})

    def explain(self, customer_id: str | None = None) -> dict:
        """SHAP values of one customer's churn score; without an id, the model's global importance."""
        return self._call("GET", f"{API}/explain", params={"customer_id": customer_id} if customer_id else None)

    def segment(self, customer_id: str) -> dict:
        return self._call("POST", f"{API}/segment", json={"customer_id": customer_id})

    def fraud(self, customer_id: str, transaction: dict) -> dict:
        return self._call("POST", f"{API}/fraud-detection", json={"customer_id": customer_id, "transaction": transaction})
