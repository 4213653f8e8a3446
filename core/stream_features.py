"""Streaming features of a customer: what the last hour and the last day of transactions say, as of
one of them. One definition for both sides: the stream consumer (streaming/consumer.py) computes
them as of each customer's newest transaction after every batch of events, and the pipeline
computes them offline as of every transaction (`offline_table`), for training. What a transaction
being scored reads from them (`before`) is one definition too: an on-demand feature view runs it
on both sides.

    events = [Event(1_700_000_000.0, "T1", 12.5, "d1", "FR"), Event(1_700_000_600.0, "T2", 80.0, "d2", "FR")]
    features_at(events, [1])   # [{"txn_count_1h": 2, "amount_sum_1h": 92.5, ..., "seconds_since_prev_txn": 600.0}]

A customer's events are ordered by time, then transaction id (ties are broken the same way on both
sides); the window of event i is the events before it in that order within the window's length,
and i itself. Sums are exactly rounded (math.fsum), so they do not depend on which other events
either side holds.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from typing import NamedTuple

HOUR_S, DAY_S = 3600.0, 86_400.0
STREAM_VIEW = "customer_stream"  # the feature view the consumer pushes to (feature_repo/stream.py)
# The row of that view whose event time says when the consumer last found the stream drained: every
# customer's row is complete as of then (streaming/consumer.py writes it; bentos/online.py reads it)
CAUGHT_UP_ID = "__stream_caught_up__"

STREAM_FEATURES = [
    "txn_count_1h", "amount_sum_1h", "txn_count_24h", "amount_sum_24h",
    "distinct_devices_24h", "distinct_countries_24h", "seconds_since_prev_txn", "amount_to_mean_24h",
    "last_txn_time",  # the event time the windows end at (epoch seconds): what a later reader measures from
]
# What a transaction being scored learns from its customer's stream features (`before`): the
# windows as they stood at the customer's previous transaction, and how long ago that was.
BEFORE_FEATURES = [
    "seconds_since_last_txn", "prev_txn_count_1h", "prev_amount_sum_1h", "prev_txn_count_24h",
    "prev_distinct_devices_24h", "prev_distinct_countries_24h", "amount_to_prev_mean_24h",
]


class Event(NamedTuple):
    time: float  # epoch seconds
    transaction_id: str
    amount: float
    device_id: str
    country: str


def features_at(events: list[Event], rows: Iterable[int]) -> list[dict[str, float]]:
    """The features as of each of `rows` (positions in `events`, which are in order). Every one
    looks back a day at most: seconds_since_prev_txn is NaN when no other transaction came in the
    day before (the stream keeps a day of each customer's events, not its whole history)."""
    times = [e.time for e in events]
    out = []
    for i in rows:
        now = times[i]
        hour = events[bisect_right(times, now - HOUR_S, 0, i):i + 1]
        day = events[bisect_right(times, now - DAY_S, 0, i):i + 1]
        day_sum = math.fsum(e.amount for e in day)
        out.append({
            "txn_count_1h": float(len(hour)),
            "amount_sum_1h": math.fsum(e.amount for e in hour),
            "txn_count_24h": float(len(day)),
            "amount_sum_24h": day_sum,
            "distinct_devices_24h": float(len({e.device_id for e in day})),
            "distinct_countries_24h": float(len({e.country for e in day})),
            "seconds_since_prev_txn": now - times[i - 1] if len(day) > 1 else math.nan,
            "amount_to_mean_24h": events[i].amount / (day_sum / len(day)),
            "last_txn_time": now,
        })
    return out


def _known(value) -> float:
    return math.nan if value is None else float(value)


def before(inputs: dict[str, list]) -> dict[str, list]:
    """BEFORE_FEATURES of transactions being scored, from their customers' stream features and
    their own `amount` and `transaction_time` (dicts of equal-length lists; the on-demand view
    `transaction_recent_activity` runs it online and for training sets).

    A transaction is scored before the stream brings it, so the windows end at the customer's
    previous transaction: they count only when that one came strictly before this one and at most
    a day before it (otherwise every output is NaN). The online store keeps a customer's row
    however old it is; this rule, not the view's TTL, is what makes an old row say nothing, the
    same way on both sides."""
    out: dict[str, list] = {name: [] for name in BEFORE_FEATURES}
    for i, amount in enumerate(inputs["amount"]):
        gap = float(inputs["transaction_time"][i]) - _known(inputs["last_txn_time"][i])
        if not 0.0 < gap <= DAY_S:  # NaN (no row) fails this too
            for values in out.values():
                values.append(math.nan)
            continue
        count_24h, sum_24h = _known(inputs["txn_count_24h"][i]), _known(inputs["amount_sum_24h"][i])
        out["seconds_since_last_txn"].append(gap)
        out["prev_txn_count_1h"].append(_known(inputs["txn_count_1h"][i]))
        out["prev_amount_sum_1h"].append(_known(inputs["amount_sum_1h"][i]))
        out["prev_txn_count_24h"].append(count_24h)
        out["prev_distinct_devices_24h"].append(_known(inputs["distinct_devices_24h"][i]))
        out["prev_distinct_countries_24h"].append(_known(inputs["distinct_countries_24h"][i]))
        out["amount_to_prev_mean_24h"].append(float(amount) / (sum_24h / count_24h) if sum_24h > 0 else math.nan)
    return out


def in_order(events: Iterable[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.time, e.transaction_id))


def offline_table(transactions):
    """The features as of every transaction (a DataFrame with the contract's columns): one row per
    transaction, stamped with its event time. What the stream would have pushed after each event,
    had every event come in order.

    Most windows hold one or two events, and those are computed for all transactions at once: a sum
    of two floats is exactly rounded by itself, so it equals fsum's. A window of three or more goes
    through `features_at`, the one definition, event by event."""
    import numpy as np
    import pandas as pd

    frame = transactions.assign(time=transactions["timestamp"].astype("int64") / 1e9)
    frame = frame.sort_values(["customer_id", "time", "transaction_id"], kind="stable").reset_index(drop=True)
    customers = frame["customer_id"].to_numpy()
    times, amounts = frame["time"].to_numpy(), frame["amount"].to_numpy(dtype="float64")
    devices, countries = frame["device_id"].to_numpy(), frame["country"].to_numpy()
    # Each window's first event: a binary search within the customer's events, on (customer, time)
    # pairs held as complex numbers, which numpy orders by real part, then imaginary part.
    run = np.concatenate([[0], np.cumsum(customers[1:] != customers[:-1])]) if len(frame) else np.zeros(0, int)  # per customer
    keys = run + 1j * times
    rows = np.arange(len(frame))
    hour = rows - np.searchsorted(keys, run + 1j * (times - HOUR_S), side="right") + 1
    day = rows - np.searchsorted(keys, run + 1j * (times - DAY_S), side="right") + 1

    previous = np.roll(amounts, 1)
    pair = day == 2  # this event and the one before it
    day_sum = np.where(pair, previous + amounts, amounts)
    columns = {
        "txn_count_1h": hour.astype("float64"),
        "amount_sum_1h": np.where(hour == 2, previous + amounts, amounts),
        "txn_count_24h": day.astype("float64"),
        "amount_sum_24h": day_sum,
        "distinct_devices_24h": np.where(pair & (devices != np.roll(devices, 1)), 2.0, 1.0),
        "distinct_countries_24h": np.where(pair & (countries != np.roll(countries, 1)), 2.0, 1.0),
        "seconds_since_prev_txn": np.where(pair, times - np.roll(times, 1), np.nan),
        "amount_to_mean_24h": amounts / (day_sum / day),
        "last_txn_time": times,
    }
    crowded = np.flatnonzero(day > 2)
    if len(crowded):
        fields = [times.tolist(), frame["transaction_id"].tolist(), amounts.tolist(), devices.tolist(), countries.tolist()]
        for i in crowded.tolist():
            first = i - int(day[i]) + 1
            window = [Event(*e) for e in zip(*(field[first:i + 1] for field in fields))]
            for name, value in features_at(window, [i - first])[0].items():
                columns[name][i] = value
    return pd.DataFrame({"customer_id": customers, "transaction_id": frame["transaction_id"].to_numpy(),
                         "event_timestamp": frame["timestamp"].array, **columns})
