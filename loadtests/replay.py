"""Real transactions to replay as live fraud-detection traffic (loadtests/locustfile.py).

    rows = replay_transactions(data_dir)    # dicts: customer_id and the request's transaction fields

The generator writes the 30 days after the data beside it (raw/transactions_later.parquet): they
come after every feature snapshot, as live traffic does, and are replayed as they are.

Without that file (your own data), the transactions of the last days are replayed. Those are
already part of their customers' latest profile, the one the online store serves: replayed as they
were, a customer's first use of a device, a country or a merchant category would look familiar to
the service, while the fraud model's served reference (the same days, each transaction against the
profile before it, as Feast joins them) saw it as new, and a drift report of that traffic flagged
`is_new_device`, `is_new_country` and `is_new_category`. So a transaction that was new when it
happened is sent with a device, country or category that its customer's latest profile does not
hold. What the profile learnt from the transaction itself (its hour, its country count) cannot be
taken back: against the default data, `hour_distance` and `distinct_countries_365d` were flagged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.realtime import names_seen
from core.schema import MERCHANT_CATEGORIES
from training.generate import LATER_TRANSACTIONS
from training.partitions import read_transactions

REQUEST_COLUMNS = ["customer_id", "amount", "merchant_category", "channel", "country", "device_id", "timestamp"]
# transaction column -> the profile's list of what the customer used before
SEEN = {"device_id": "devices_seen", "country": "countries_seen", "merchant_category": "categories_seen"}


def _unused(pool: list[str], used: set[str], rng: np.random.Generator) -> str | None:
    left = [value for value in pool if value not in used]
    return left[rng.integers(len(left))] if left else None


def _requests(frame: pd.DataFrame) -> list[dict]:
    return frame[REQUEST_COLUMNS].assign(timestamp=frame["timestamp"].map(pd.Timestamp.isoformat)).to_dict("records")


def replay_transactions(data_dir: Path, days: int = 30, rows: int = 50_000, seed: int = 0) -> list[dict]:
    """Up to `rows` transactions in time order, with ISO timestamps: the generator's later ones, or
    else those of the last `days`, first uses kept new (module docstring)."""
    later = data_dir / "raw" / LATER_TRANSACTIONS
    if later.exists():
        tx = pd.read_parquet(later, columns=REQUEST_COLUMNS)
        return _requests(tx.sample(min(rows, len(tx)), random_state=seed).sort_values("timestamp", kind="stable"))
    rng = np.random.default_rng(seed)
    tx = read_transactions(data_dir / "clean" / "transactions_by_customer", columns=REQUEST_COLUMNS)
    recent = tx[tx["timestamp"] >= tx["timestamp"].max() - pd.Timedelta(days=days)]
    recent = recent.sample(min(rows, len(recent)), random_state=seed).sort_values("timestamp", kind="stable")
    profiles = pd.read_parquet(data_dir / "features" / "customer_features.parquet",
                               columns=["customer_id", "event_timestamp", *SEEN.values()])
    profiles["event_timestamp"] = profiles["event_timestamp"].astype(recent["timestamp"].dtype)
    # each transaction beside the latest profile made before it (Feast's point-in-time join)
    then = pd.merge_asof(recent, profiles.sort_values("event_timestamp"), left_on="timestamp",
                         right_on="event_timestamp", by="customer_id", direction="backward")
    latest = profiles[profiles["event_timestamp"] == profiles["event_timestamp"].max()]
    now_seen = latest.set_index("customer_id")[list(SEEN.values())].to_dict("index")
    pools = {"country": sorted(tx["country"].unique()), "merchant_category": list(MERCHANT_CATEGORIES)}

    out = _requests(then)
    for row, before in zip(out, then[list(SEEN.values())].fillna("").to_dict("records")):  # "": no profile before
        now = now_seen.get(row["customer_id"], {})
        for column, seen in SEEN.items():
            used = names_seen(now.get(seen))
            if row[column] in names_seen(before[seen]) or row[column] not in used:
                continue  # not a first use, or new to the service as it is
            if column == "device_id":
                row[column] = f"{row[column]}-new"
            else:
                row[column] = _unused(pools[column], used, rng) or row[column]
    return out
