import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_tx
from training import partitions
from training.features import (
    ACTIVITY_FEATURES,
    NUMERIC_FEATURES,
    PROFILE_FEATURES,
    RISK_FEATURES,
    SPEND_MIX_FEATURES,
    churn_labels,
    compute_features,
    snapshot_dates,
)

SNAPSHOT = pd.Timestamp("2026-04-01", tz="UTC")


def features_of(tx, customer, snapshot=SNAPSHOT):
    table = compute_features(tx, [snapshot])
    return table.set_index("customer_id").loc[customer]


def test_there_are_at_least_fifty_features_in_three_groups():
    assert len(NUMERIC_FEATURES) + len(PROFILE_FEATURES) >= 50
    assert len(set(NUMERIC_FEATURES)) == len(NUMERIC_FEATURES) == len(ACTIVITY_FEATURES) + len(SPEND_MIX_FEATURES) + len(RISK_FEATURES)


def test_values_match_hand_computed_ones(tiny_tx):
    a = features_of(tiny_tx, "A")
    # last transaction 2026-03-29 02:00, snapshot 2026-04-01 00:00: 2 days and 22 hours
    assert a["days_since_last_txn"] == pytest.approx(2 + 22 / 24)
    assert a["txn_count_7d"] == 1 and a["spend_7d"] == 20.0
    assert a["txn_count_30d"] == 3 and a["spend_30d"] == 100.0
    assert a["txn_count_90d"] == 4 and a["spend_90d"] == 200.0
    assert a["avg_amount_90d"] == pytest.approx(50.0)
    assert a["median_amount_90d"] == pytest.approx(40.0)  # of 20, 30, 50, 100
    assert a["max_amount_90d"] == 100.0
    assert a["share_groceries_90d"] == pytest.approx(130 / 200)
    assert a["share_pos_90d"] == pytest.approx(2 / 4)
    assert a["night_share_90d"] == pytest.approx(1 / 4)
    assert a["distinct_countries_365d"] == 2 and a["distinct_devices_365d"] == 2
    assert a["home_country"] == "GB" and a["countries_seen"] == "FR|GB" and a["devices_seen"] == "dA|dB"
    assert a["foreign_share_90d"] == pytest.approx(1 / 4)
    # gaps inside the 90 days: 2026-01-10 -> 03-02 (51 d 2 h), -> 03-22 (20 d), -> 03-29 (6 d 14 h)
    assert a["gap_max_90d"] == pytest.approx(51 + 2 / 24)
    assert a["gap_mean_90d"] == pytest.approx((51 + 2 / 24 + 20 + 6 + 14 / 24) / 3)
    # spend in the 30 days (100) against the monthly average of the 90 days (200 / 3)
    assert a["spend_trend_30_90"] == pytest.approx(100 / (200 / 3))


def test_customer_without_recent_activity_has_zero_windows(tiny_tx):
    b = features_of(tiny_tx, "B")
    assert b["txn_count_90d"] == 0 and b["spend_90d"] == 0 and b["txn_count_180d"] == 1
    assert b["days_since_last_txn"] == pytest.approx(121 - 9 / 24)


@pytest.mark.parametrize("engine", ["one process", "local", pytest.param("ray", marks=[pytest.mark.integration, pytest.mark.slow])])
def test_transactions_after_a_snapshot_never_change_it(tiny_tx, engine, tmp_path, request):
    if engine == "ray":
        request.getfixturevalue("local_ray")

    def features_at_snapshot(tx, folder):
        if engine == "one process":
            return compute_features(tx, [SNAPSHOT])
        parts = partitions.write(tx, tmp_path / folder / "tx", 2)
        return partitions.read_features(partitions.features_by_partition(parts, [SNAPSHOT], tmp_path / folder / "features",
                                                                         engine, progress=False))

    before = features_at_snapshot(tiny_tx, "before")
    later = make_tx([
        ("A", "2026-04-01 00:00", 999.0, "electronics", "online", "US", "dZ"),  # exactly at the snapshot
        ("A", "2026-05-01 00:00", 5.0, "groceries", "pos", "GB", "dA"),
        ("B", "2026-04-02 00:00", 7.0, "groceries", "pos", "GB", "dC"),
    ]).assign(transaction_id=["X1", "X2", "X3"])
    after = features_at_snapshot(pd.concat([tiny_tx, later], ignore_index=True), "after")
    pd.testing.assert_frame_equal(before, after)
    assert len(before) == 2


def test_snapshots_end_the_day_after_the_last_transaction(tiny_tx):
    dates = snapshot_dates(tiny_tx, every_days=30, min_history_days=30)
    assert dates[0] == pd.Timestamp("2025-12-31", tz="UTC")
    assert dates[-1] == pd.Timestamp("2026-03-30", tz="UTC")
    assert all(b > a for a, b in zip(dates, dates[1:]))


def test_churn_label_comes_from_the_window_after_the_snapshot(tiny_tx):
    table = compute_features(tiny_tx, [pd.Timestamp("2026-03-10", tz="UTC")])
    labels = churn_labels(tiny_tx, table, horizon_days=15).set_index("customer_id")["churned"]
    assert labels["A"] == 0  # bought on 2026-03-22, inside the 15 days
    assert labels["B"] == 1  # nothing after 2025-12-01


def test_snapshots_whose_horizon_passes_the_data_are_not_labelled(tiny_tx):
    table = compute_features(tiny_tx, [SNAPSHOT - pd.Timedelta(days=5)])
    assert churn_labels(tiny_tx, table, horizon_days=60).empty


def test_features_are_finite(small_raw):
    out, _ = small_raw
    tx = pd.read_parquet(out / "transactions.parquet")
    table = compute_features(tx, snapshot_dates(tx, 30, 90))
    assert np.isfinite(table[NUMERIC_FEATURES].to_numpy()).all()


def test_a_customers_features_do_not_depend_on_the_other_customers_in_the_frame():
    # B uses FR and GB equally: its home country is a tie, which must not go to whichever country
    # the other customers in the frame happened to show first (a partition holds only some of them)
    b = make_tx([
        ("B", "2026-03-01 10:00", 40.0, "groceries", "pos", "FR", "dB"),
        ("B", "2026-03-05 10:00", 60.0, "dining", "pos", "GB", "dB"),
    ]).assign(transaction_id=["B1", "B2"])
    a = make_tx([("A", "2026-03-02 10:00", 10.0, "groceries", "pos", "GB", "dA")]).assign(transaction_id=["A1"])
    alone = features_of(b, "B")
    beside = features_of(pd.concat([a, b], ignore_index=True), "B")
    pd.testing.assert_series_equal(alone, beside, check_exact=True)
    assert alone["home_country"] == "FR"  # the tie goes to the first alphabetically


def test_a_partition_whose_customers_stopped_early_is_labelled_up_to_the_whole_datas_end():
    """A partition holds some customers only: the horizons that fit are those that end by the last
    transaction of all the data, not by the partition's own last one."""
    quiet = make_tx([("Q", f"2026-01-{d:02d} 12:00", 20.0, "groceries", "pos", "GB", "dQ") for d in range(1, 29)])
    snapshots = [pd.Timestamp("2026-01-15", tz="UTC"), pd.Timestamp("2026-02-01", tz="UTC")]
    table = compute_features(quiet, snapshots)
    whole_end = pd.Timestamp("2026-06-30", tz="UTC")  # another partition's customers went on until then
    labels = churn_labels(quiet, table, horizon_days=60, data_end=whole_end)
    assert labels["event_timestamp"].tolist() == snapshots and labels["churned"].tolist() == [0, 1]
    assert churn_labels(quiet, table, horizon_days=60).empty  # by its own end, no horizon fits


@pytest.mark.parametrize("largest_code", [30, 10**9])  # counted all at once, or sorted
def test_distinct_pairs_are_counted_in_customer_then_code_order(largest_code):
    from training.features import _distinct

    rng = np.random.default_rng(3)
    cust = rng.integers(0, 50, size=2_000)
    code = rng.choice(rng.integers(0, largest_code + 1, size=40), size=2_000)
    pairs = pd.Series(1, index=pd.MultiIndex.from_arrays([cust, code])).groupby(level=[0, 1]).sum()
    got_cust, got_code, got_counts = _distinct(cust, code)
    assert got_cust.tolist() == pairs.index.get_level_values(0).tolist()
    assert got_code.tolist() == pairs.index.get_level_values(1).tolist()
    assert got_counts.tolist() == pairs.tolist()
