"""The load test's fraud traffic: replayed transactions are as new to the service, which reads the
latest profile, as they were when they happened, against the profile before them."""

import pandas as pd
import pytest

from loadtests.replay import SEEN, replay_transactions
from tests.conftest import make_tx
from training.features import compute_features
from training.generate import LATER_TRANSACTIONS
from training.partitions import write

SNAPSHOTS = [pd.Timestamp("2026-03-01", tz="UTC"), pd.Timestamp("2026-04-01", tz="UTC")]
NEW = {"device_id": "is_new_device", "country": "is_new_country", "merchant_category": "is_new_category"}


@pytest.fixture
def data_dir(tmp_path):
    tx = make_tx([
        ("A", "2026-01-10 10:00", 100.0, "groceries", "pos", "GB", "dA"),
        ("A", "2026-02-20 12:00", 50.0, "dining", "online", "GB", "dA"),
        ("A", "2026-03-05 12:00", 30.0, "groceries", "pos", "GB", "dA"),   # nothing new
        ("A", "2026-03-20 02:00", 20.0, "travel", "mobile", "FR", "dB"),   # new device, country, category
        ("A", "2026-03-25 02:00", 25.0, "travel", "mobile", "FR", "dB"),   # all seen before: not new then either
        ("B", "2026-01-01 09:00", 200.0, "retail", "pos", "DE", "dC"),
        ("B", "2026-03-10 09:00", 80.0, "retail", "pos", "DE", "dD"),      # a new device only
        ("C", "2026-03-15 09:00", 60.0, "fuel", "pos", "ES", "dE"),        # no profile before it
    ])
    (tmp_path / "features").mkdir()
    write(tx, tmp_path / "clean" / "transactions_by_customer", 2)
    compute_features(tx, SNAPSHOTS).to_parquet(tmp_path / "features" / "customer_features.parquet")
    return tmp_path


def newness(rows: list[dict], profiles: pd.DataFrame) -> list[dict]:
    """is_new_* of each row against the given profile of its customer (none: everything is new)."""
    seen = profiles.set_index("customer_id")
    out = []
    for row in rows:
        profile = seen.loc[row["customer_id"]] if row["customer_id"] in seen.index else None
        out.append({flag: int(profile is None or row[column] not in profile[SEEN[column]].split("|"))
                    for column, flag in NEW.items()})
    return out


def test_without_later_transactions_a_first_use_stays_new_against_the_latest_profile(data_dir):
    table = pd.read_parquet(data_dir / "features" / "customer_features.parquet")
    rows = replay_transactions(data_dir, days=30)
    assert [r["timestamp"][:10] for r in rows] == ["2026-03-05", "2026-03-10", "2026-03-15", "2026-03-20", "2026-03-25"]

    then = newness(rows, table[table["event_timestamp"] == SNAPSHOTS[0]])
    now = newness(rows, table[table["event_timestamp"] == SNAPSHOTS[1]])
    assert then == [
        {"is_new_device": 0, "is_new_country": 0, "is_new_category": 0},
        {"is_new_device": 1, "is_new_country": 0, "is_new_category": 0},
        {"is_new_device": 1, "is_new_country": 1, "is_new_category": 1},
        {"is_new_device": 1, "is_new_country": 1, "is_new_category": 1},
        {"is_new_device": 1, "is_new_country": 1, "is_new_category": 1},
    ]
    assert now == then
    assert (rows[0]["device_id"], rows[0]["country"], rows[0]["merchant_category"]) == ("dA", "GB", "groceries")
    assert rows[1]["country"] == "DE" and rows[1]["merchant_category"] == "retail"
    assert [r["amount"] for r in rows] == [30.0, 80.0, 60.0, 20.0, 25.0]


def test_the_generators_later_transactions_are_replayed_as_they_are(data_dir):
    later = make_tx([
        ("A", "2026-04-02 10:00", 70.0, "travel", "mobile", "PT", "dZ"),
        ("B", "2026-04-01 08:00", 90.0, "retail", "pos", "DE", "dC"),
    ])
    (data_dir / "raw").mkdir()
    later.to_parquet(data_dir / "raw" / LATER_TRANSACTIONS)
    rows = replay_transactions(data_dir)
    assert rows == [
        {"customer_id": "B", "amount": 90.0, "merchant_category": "retail", "channel": "pos", "country": "DE",
         "device_id": "dC", "timestamp": "2026-04-01T08:00:00+00:00"},
        {"customer_id": "A", "amount": 70.0, "merchant_category": "travel", "channel": "mobile", "country": "PT",
         "device_id": "dZ", "timestamp": "2026-04-02T10:00:00+00:00"},
    ]
