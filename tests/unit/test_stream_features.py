"""The streaming features of one customer, by hand on a small ledger, the offline table built
from the same function, and what a transaction being scored reads of them."""

import math

import numpy as np
import pandas as pd
import pytest

from core.stream_features import BEFORE_FEATURES, STREAM_FEATURES, Event, before, features_at, in_order, offline_table

T0 = 1_700_000_000.0
LEDGER = [  # time, id, amount, device, country
    Event(T0, "T1", 10.0, "d1", "FR"),
    Event(T0 + 1800, "T2", 30.0, "d2", "FR"),  # 30 min later
    Event(T0 + 7200, "T3", 20.0, "d1", "DE"),  # 2 h after the first: T1 out of the hour
    Event(T0 + 7200, "T4", 40.0, "d3", "FR"),  # the same second as T3: after it, by id
    Event(T0 + 86_400 + 1800, "T5", 100.0, "d1", "FR"),  # T1 and T2 out of the day
]


def test_each_window_holds_the_events_before_and_at_its_event_within_its_length():
    first, second, third, fourth, fifth = features_at(LEDGER, range(5))
    assert first["txn_count_1h"] == 1 and first["amount_sum_24h"] == 10.0 and math.isnan(first["seconds_since_prev_txn"])
    assert first["amount_to_mean_24h"] == 1.0
    assert (second["txn_count_1h"], second["amount_sum_1h"], second["seconds_since_prev_txn"]) == (2, 40.0, 1800.0)
    assert (third["txn_count_1h"], third["amount_sum_1h"], third["txn_count_24h"]) == (1, 20.0, 3)
    assert third["distinct_devices_24h"] == 2 and third["distinct_countries_24h"] == 2
    assert (fourth["txn_count_1h"], fourth["seconds_since_prev_txn"], fourth["distinct_devices_24h"]) == (2, 0.0, 3)
    assert fourth["amount_to_mean_24h"] == pytest.approx(40.0 / 25.0)
    assert (fifth["txn_count_24h"], fifth["amount_sum_24h"], fifth["distinct_devices_24h"]) == (3, 160.0, 2)
    assert fifth["txn_count_1h"] == 1 and fifth["seconds_since_prev_txn"] == 86_400 - 5400
    alone = features_at([LEDGER[0], Event(T0 + 86_401, "T9", 1.0, "d1", "FR")], [1])[0]
    assert math.isnan(alone["seconds_since_prev_txn"])  # the previous one is more than a day back


def test_a_window_depends_only_on_the_events_it_holds_not_on_the_order_they_came_in():
    shuffled = in_order([LEDGER[4], LEDGER[2], LEDGER[0], LEDGER[3], LEDGER[1]])
    assert shuffled == LEDGER
    assert features_at(shuffled, [4]) == features_at(LEDGER, [4])
    assert features_at(LEDGER[2:], [2])[0]["amount_sum_24h"] == features_at(LEDGER, [4])[0]["amount_sum_24h"]  # fsum: exact


def test_the_offline_table_is_the_same_function_as_of_every_transaction():
    rows = [("C1", e) for e in LEDGER] + [("C2", Event(T0 + 60, "U1", 5.0, "x", "US"))]
    transactions = pd.DataFrame({
        "transaction_id": [e.transaction_id for _, e in rows], "customer_id": [c for c, _ in rows],
        "timestamp": pd.to_datetime([e.time for _, e in rows], unit="s", utc=True), "amount": [e.amount for _, e in rows],
        "device_id": [e.device_id for _, e in rows], "country": [e.country for _, e in rows]}).sample(frac=1, random_state=0)
    table = offline_table(transactions)
    mine = table[table["customer_id"] == "C1"].drop(columns=["customer_id", "transaction_id", "event_timestamp"])
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), pd.DataFrame(features_at(LEDGER, range(5))))
    assert table["transaction_id"].tolist() == ["T1", "T2", "T3", "T4", "T5", "U1"]
    assert table.loc[table["transaction_id"] == "U1", "txn_count_24h"].item() == 1



def test_the_offline_table_equals_the_function_event_by_event_on_crowded_and_quiet_customers():
    """The table computes windows of one or two events for all rows at once; bursts (several events
    a minute, ties in time, amounts whose sums round) must come out exactly as features_at's."""
    rng = np.random.default_rng(7)
    events = []
    for customer in range(60):
        burst = customer % 3 == 0
        gaps = rng.exponential(120.0 if burst else 30_000.0, size=40).round(0 if customer % 2 else 3)
        times = T0 + np.cumsum(gaps)
        events += [(f"C{customer}", Event(t, f"T{customer}-{i}", float(rng.choice([0.1, 0.2, 0.3, 1e-3, 7.77, 1e6])),
                                          f"d{rng.integers(3)}", rng.choice(["FR", "DE"]))) for i, t in enumerate(times)]
    edges = [T0, T0 + 3600, T0 + 7200, T0 + 86_400, T0 + 86_400, T0 + 90_000]  # exactly an hour, exactly a day
    events += [("E", Event(t, f"E{i}", 1.5 * (i + 1), "d", "FR")) for i, t in enumerate(edges)]
    transactions = pd.DataFrame({
        "transaction_id": [e.transaction_id for _, e in events], "customer_id": [c for c, _ in events],
        "timestamp": pd.to_datetime([e.time for _, e in events], unit="s", utc=True), "amount": [e.amount for _, e in events],
        "device_id": [e.device_id for _, e in events], "country": [e.country for _, e in events]}).sample(frac=1, random_state=1)
    table = offline_table(transactions)

    expected = []
    for customer, rows in transactions.assign(time=transactions["timestamp"].astype("int64") / 1e9).groupby("customer_id"):
        ledger = in_order(Event(*e) for e in rows[["time", "transaction_id", "amount", "device_id", "country"]].itertuples(index=False))
        expected += [{"customer_id": customer, **f} for f in features_at(ledger, range(len(ledger)))]
    assert (table["txn_count_24h"] > 2).sum() > 200 and (table["txn_count_24h"] < 3).sum() > 200  # both ways taken
    pd.testing.assert_frame_equal(table.drop(columns=["transaction_id", "event_timestamp"]).reset_index(drop=True),
                                  pd.DataFrame(expected), check_exact=True)

def stream_row(features: dict) -> dict:
    """One stored stream row as an on-demand view gets it: each feature a one-element list."""
    return {name: [value] for name, value in features.items()}


def test_a_scored_transaction_reads_the_windows_of_the_previous_one_and_the_time_since_it():
    third = features_at(LEDGER, [2])[0]  # as the stream left it after T3, two hours in
    seen = before({**stream_row(third), "amount": [50.0], "transaction_time": [T0 + 7200 + 600]})
    assert seen["seconds_since_last_txn"] == [600.0]
    assert (seen["prev_txn_count_1h"], seen["prev_amount_sum_1h"], seen["prev_txn_count_24h"]) == ([1.0], [20.0], [3.0])
    assert (seen["prev_distinct_devices_24h"], seen["prev_distinct_countries_24h"]) == ([2.0], [2.0])
    assert seen["amount_to_prev_mean_24h"] == [pytest.approx(50.0 / (60.0 / 3))]
    assert set(seen) == set(BEFORE_FEATURES)


@pytest.mark.parametrize("after_s", [0.0, -60.0, 86_400.5])
def test_a_stream_row_not_strictly_before_the_transaction_or_more_than_a_day_old_says_nothing(after_s):
    third = features_at(LEDGER, [2])[0]
    seen = before({**stream_row(third), "amount": [50.0], "transaction_time": [third["last_txn_time"] + after_s]})
    assert all(math.isnan(values[0]) for values in seen.values())


def test_a_customer_the_stream_has_not_seen_has_every_recent_activity_feature_missing():
    nothing = {name: [None] for name in STREAM_FEATURES}
    seen = before({**nothing, "amount": [50.0], "transaction_time": [T0]})
    assert all(math.isnan(values[0]) for values in seen.values())
    exactly_a_day = before({**stream_row(features_at(LEDGER, [0])[0]), "amount": [5.0], "transaction_time": [T0 + 86_400]})
    assert exactly_a_day["seconds_since_last_txn"] == [86_400.0] and exactly_a_day["amount_to_prev_mean_24h"] == [0.5]
