"""Mixed traffic against a running service: `make loadtest` (headless, CSV and HTML reports).

60% churn-score, 30% fraud-detection, 10% segment; customer ids are drawn from the real customer
population (the last feature snapshot under $DATA_DIR) with about 2% unknown ids, which must come
back as 404, not as failures of the service.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
from locust import HttpUser, between, events, task

from core.schema import CHANNELS, MERCHANT_CATEGORIES

UNKNOWN_SHARE = 0.02
CUSTOMERS: list[str] = []


@events.init.add_listener
def load_customers(environment, **_) -> None:
    data_dir = Path(os.environ.get("DATA_DIR", Path(__file__).resolve().parent.parent / "data"))
    table = pd.read_parquet(data_dir / "features" / "customer_features.parquet", columns=["customer_id", "event_timestamp"])
    CUSTOMERS.extend(table.loc[table["event_timestamp"] == table["event_timestamp"].max(), "customer_id"])


def customer() -> tuple[str, bool]:
    if random.random() < UNKNOWN_SHARE:
        return f"UNKNOWN{random.randint(0, 10**6)}", False
    return random.choice(CUSTOMERS), True


class BankClient(HttpUser):
    wait_time = between(0.05, 0.2)

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
        customer_id, known = customer()
        transaction = {
            "amount": round(random.lognormvariate(3.6, 0.9), 2),
            "merchant_category": random.choice(MERCHANT_CATEGORIES),
            "channel": random.choice(CHANNELS),
            "country": random.choice(["GB", "GB", "GB", "DE", "FR", "US"]),
            "device_id": f"D{customer_id[1:]}-{random.randint(0, 2)}",
        }
        self._post("fraud-detection", {"customer_id": customer_id, "transaction": transaction}, known)

    @task(1)
    def segment(self) -> None:
        customer_id, known = customer()
        self._post("segment", {"customer_id": customer_id}, known)
