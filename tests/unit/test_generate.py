from datetime import date

import numpy as np
import pandas as pd

from core.contract import validate
from core.schema import CUSTOMER_COLUMNS, TRANSACTION_COLUMNS
from training.generate import CHUNK_CUSTOMERS, LATER_TRANSACTIONS, Period, generate, generate_chunk


def test_generated_data_honours_the_contract(small_raw):
    out, summary = small_raw
    tx = pd.read_parquet(out / "transactions.parquet")
    customers = pd.read_parquet(out / "customers.parquet")
    assert list(tx.columns) == list(TRANSACTION_COLUMNS)
    assert list(customers.columns) == list(CUSTOMER_COLUMNS)
    result = validate(tx, known_customers=set(customers["customer_id"]))
    assert result.rejected.empty and len(result.accepted) == summary.transactions
    assert customers["customer_id"].is_unique and len(customers) == 1500


def test_fraud_rate_and_volume_are_bank_like(small_raw):
    _, summary = small_raw
    assert 0.002 <= summary.fraud_rate <= 0.01
    assert 60 <= summary.transactions / summary.customers <= 160  # about 100 a year


def test_fraud_is_unusual_for_the_customer(small_raw):
    out, _ = small_raw
    tx = pd.read_parquet(out / "transactions.parquet")
    fraud = tx[tx["is_fraud"] == 1]
    legit = tx[tx["is_fraud"] == 0]
    assert fraud["amount"].median() > 3 * legit["amount"].median()
    assert (fraud["timestamp"].dt.hour < 6).mean() > 3 * (legit["timestamp"].dt.hour < 6).mean()
    assert fraud["device_id"].str.contains("-X").mean() > 0.4
    assert legit["device_id"].str.contains("-X").mean() == 0


def test_same_seed_same_data_other_seed_other_data():
    base = Period(date(2026, 1, 1), date(2026, 3, 1))
    a = generate_chunk(1, 0, 200, base, base, drifted=False)[1]
    b = generate_chunk(1, 0, 200, base, base, drifted=False)[1]
    c = generate_chunk(2, 0, 200, base, base, drifted=False)[1]
    pd.testing.assert_frame_equal(a, b)
    assert not a["amount"].equals(c["amount"])


def test_chunks_are_written_one_at_a_time(tmp_path):
    n = CHUNK_CUSTOMERS + 10  # two chunks
    summary = generate(tmp_path, n_customers=n, months=1, start=date(2026, 1, 1), seed=3, progress=False)
    customers = pd.read_parquet(tmp_path / "customers.parquet")
    assert len(customers) == n and customers["customer_id"].is_unique
    import pyarrow.parquet as pq
    assert pq.ParquetFile(tmp_path / "customers.parquet").num_row_groups == 2
    assert summary.transactions == pq.ParquetFile(tmp_path / "transactions.parquet").metadata.num_rows


def test_drift_scenario_shifts_only_what_its_manifest_says(small_raw):
    import json
    out, _ = small_raw
    manifest = json.loads((out / "drift_manifest.json").read_text())
    assert set(manifest["shifted_columns"]) == {"amount", "channel"}
    before = pd.read_parquet(out / "transactions.parquet")
    after = pd.read_parquet(out / "transactions_drift.parquet")
    assert after["timestamp"].min() >= before["timestamp"].max()
    legit_before, legit_after = before[before.is_fraud == 0], after[after.is_fraud == 0]
    assert legit_after["amount"].median() > 1.25 * legit_before["amount"].median()
    pos_before = (legit_before["channel"] == "pos").mean()
    assert (legit_after["channel"] == "pos").mean() < 0.65 * pos_before
    share = lambda f: f["merchant_category"].value_counts(normalize=True)
    assert np.abs(share(legit_after) - share(legit_before)).max() < 0.02


def test_the_next_30_days_come_after_the_data_for_the_same_customers_unchanged(small_raw):
    out, _ = small_raw
    before = pd.read_parquet(out / "transactions.parquet")
    later = pd.read_parquet(out / LATER_TRANSACTIONS)
    assert list(later.columns) == list(TRANSACTION_COLUMNS)
    assert later["timestamp"].min() >= pd.Timestamp("2026-10-01", tz="UTC") > before["timestamp"].max()
    assert later["timestamp"].max() < pd.Timestamp("2026-10-31", tz="UTC")
    assert set(later["customer_id"]) <= set(pd.read_parquet(out / "customers.parquet")["customer_id"])
    assert not set(later["transaction_id"]) & set(before["transaction_id"])
    legit_before, legit_later = before[before.is_fraud == 0], later[later.is_fraud == 0]
    assert abs(legit_later["amount"].median() / legit_before["amount"].median() - 1) < 0.1
    assert abs((legit_later["channel"] == "pos").mean() - (legit_before["channel"] == "pos").mean()) < 0.05
