"""Mixed traffic against a running service: `make loadtest` (headless, CSV and HTML reports).

60% churn-score, 30% fraud-detection, 10% segment; customer ids are drawn from the real customer
population (the last feature snapshot under $DATA_DIR) with about 2% unknown ids, which must come
back as 404, not as failures of the service. Fraud requests replay real transactions (amount,
merchant, channel, country, device and time): the 30 days the generator wrote after the data, or
with your own data its last 30 days (loadtests/replay.py), so the traffic looks like what the fraud
model's served reference holds and a drift report on it has nothing to flag. Every request carries
the local API key (core/api_keys.py), or FINTECH_API_KEY when set.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
from locust import HttpUser, between, events, task

from core.api_keys import client_headers
from loadtests.replay import replay_transactions

DATA_DIR = Path(os.environ.get("DATA_DIR", Path(__file__).resolve().parent.parent / "data"))
UNKNOWN_SHARE = 0.02
CUSTOMERS: list[str] = []
KNOWN: set[str] = set()
TRANSACTIONS: list[dict] = []


@events.init.add_listener
def load_customers(environment, **_) -> None:
    table = pd.read_parquet(DATA_DIR / "features" / "customer_features.parquet", columns=["customer_id", "event_timestamp"])
    CUSTOMERS.extend(table.loc[table["event_timestamp"] == table["event_timestamp"].max(), "customer_id"])
    KNOWN.update(CUSTOMERS)
    TRANSACTIONS.extend(replay_transactions(DATA_DIR))


def customer() -> tuple[str, bool]:
    if random.random() < UNKNOWN_SHARE:
        return f"UNKNOWN{random.randint(0, 10**6)}", False
    return random.choice(CUSTOMERS), True


class BankClient(HttpUser):
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        # the local key `make up` made, or FINTECH_API_KEY(_FILE): the service needs one unless AUTH_MODE=off
        self.client.headers.update(client_headers(DATA_DIR / "secrets"))

    def _post(self, route: str, body: dict, known: bool) -> None:
        with self.client.post(f"/api/v1/inference/{route}", json=body, name=route, catch_response=True) as response:
            if response.status_code == 200 or (not known and response.status_code == 404):
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(6)
    def churn_score(self) -> None:
        customer_id, known = customer()
        self._post("churn-score", {"customer_id": customer_id}, known)

    @task(3)
    def fraud_detection(self) -> None:
        transaction = dict(random.choice(TRANSACTIONS))
        customer_id = transaction.pop("customer_id")
        known = customer_id in KNOWN
        if random.random() < UNKNOWN_SHARE:
            customer_id, known = f"UNKNOWN{random.randint(0, 10**6)}", False
        self._post("fraud-detection", {"customer_id": customer_id, "transaction": transaction}, known)

    @task(1)
    def segment(self) -> None:
        customer_id, known = customer()
        self._post("segment", {"customer_id": customer_id}, known)
