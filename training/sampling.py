"""Seeded samples for training sets that do not depend on how the data is split or ordered.

Each unit (a customer, a transaction) gets a key: a keyed hash of its id and the seed. A sample of
n is the n smallest keys, taken in each stratum (churned or not, fraud or not) in proportion to the
stratum's size, so the label's rate is the population's. The same ids and seed give the same
sample whatever the partitions, the engine or the order the rows come in, and a sample of a
partitioned table is built one partition at a time.

    chosen = stratified(customer_ids, ever_churned, n=100_000, seed=42)       # a boolean per id
    tx = sample_partitions(parts, "transaction_id", "is_fraud", 200_000, seed=42, since=first_snapshot)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.partitions import read_part


def keys(ids, seed: int) -> np.ndarray:
    """Each id's sample key for `seed` (uniform over uint64)."""
    return pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=f"sample{seed:010d}"[-16:], categorize=False)


def quotas(counts: dict, n: int) -> dict:
    """n split over the strata in proportion to their counts (largest remainders), each at most its count."""
    total = sum(counts.values())
    if n >= total:
        return dict(counts)
    exact = {s: n * c / total for s, c in counts.items()}
    quota = {s: int(e) for s, e in exact.items()}
    for s in sorted(exact, key=lambda s: (quota[s] - exact[s], str(s)))[: n - sum(quota.values())]:
        quota[s] += 1
    return quota


def stratified(ids, strata, n: int, seed: int) -> np.ndarray:
    """Which of `ids` are in the sample of n (a boolean per id), stratified on `strata`."""
    ids, strata = np.asarray(ids, dtype=object), np.asarray(strata)
    key = keys(ids, seed)
    chosen = np.zeros(len(ids), dtype=bool)
    values, counts = np.unique(strata, return_counts=True)
    for value, quota in quotas(dict(zip(values.tolist(), counts.tolist())), n).items():
        members = np.flatnonzero(strata == value)
        chosen[members[np.argsort(key[members], kind="stable")[:quota]]] = True
    return chosen


def sample_partitions(parts: list[Path], id_column: str, stratum: str, n: int, seed: int,
                      since: pd.Timestamp | None = None, time_column: str = "timestamp") -> tuple[pd.DataFrame, dict]:
    """n rows of the partitions (of the rows from `since` on), stratified on `stratum`: the rows
    `stratified` would choose from all of them at once, and each stratum's count in the population.
    Read twice, a partition at a time, holding at most n keys per stratum in between."""
    def eligible(frame: pd.DataFrame) -> pd.DataFrame:
        return frame if since is None else frame[frame[time_column] >= since]

    smallest: dict = {}  # stratum -> the smallest keys seen so far (at most n)
    counts: dict = {}
    for part in parts:
        frame = eligible(read_part(part, columns=[id_column, stratum, time_column]))
        key = keys(frame[id_column], seed)
        for value, members in frame.groupby(stratum, sort=False).indices.items():
            counts[value] = counts.get(value, 0) + len(members)
            merged = np.concatenate([smallest.get(value, np.array([], dtype=np.uint64)), key[members]])
            smallest[value] = np.sort(merged)[:n]
    quota = quotas(counts, n)
    # a row is in when its key is at most its stratum's quota-th smallest (distinct ids' keys do not tie)
    threshold = {value: smallest[value][quota[value] - 1] for value in quota if quota[value]}
    chosen = []
    for part in parts:
        frame = read_part(part)
        if frame.empty:  # a partition no customer hashes to
            continue
        frame = eligible(frame)
        key, keep = keys(frame[id_column], seed), np.zeros(len(frame), dtype=bool)
        for value, members in frame.groupby(stratum, sort=False).indices.items():
            if value in threshold:
                keep[members] = key[members] <= threshold[value]
        chosen.append(frame[keep])
    return pd.concat(chosen, ignore_index=True), counts


def customers_sample(ids, n: int, seed: int) -> np.ndarray | None:
    """The n customers of `ids` (repeats allowed) with the smallest keys, or None when there are
    no more than n: everyone."""
    unique = pd.unique(np.asarray(ids, dtype=object))
    return None if len(unique) <= n else unique[stratified(unique, np.zeros(len(unique)), n, seed)]
