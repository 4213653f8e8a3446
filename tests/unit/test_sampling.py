"""Seeded, stratified training samples (training/sampling.py): the same sample however the data is
partitioned or ordered, the label's rate kept."""

import numpy as np
import pandas as pd
import pytest

from training import partitions, sampling


def test_quotas_split_n_in_proportion_and_take_everyone_when_n_is_larger():
    assert sampling.quotas({0: 990, 1: 10}, 100) == {0: 99, 1: 1}
    assert sum(sampling.quotas({"a": 3, "b": 3, "c": 3}, 4).values()) == 4
    assert sampling.quotas({0: 5, 1: 2}, 50) == {0: 5, 1: 2}


def test_a_stratified_sample_keeps_the_rate_and_changes_only_with_the_seed():
    ids = [f"C{i:07d}" for i in range(10_000)]
    churned = np.r_[np.ones(500), np.zeros(9_500)]
    chosen = sampling.stratified(ids, churned, 1_000, seed=42)
    assert chosen.sum() == 1_000 and churned[chosen].sum() == 50
    shuffled = np.random.default_rng(0).permutation(len(ids))
    again = sampling.stratified(np.asarray(ids)[shuffled], churned[shuffled], 1_000, seed=42)
    assert set(np.asarray(ids)[shuffled][again]) == set(np.asarray(ids)[chosen])  # order does not matter
    assert set(np.asarray(ids)[sampling.stratified(ids, churned, 1_000, seed=7)]) != set(np.asarray(ids)[chosen])


@pytest.fixture(scope="module")
def tx(small_raw):
    raw, _ = small_raw
    return pd.read_parquet(raw / "transactions.parquet")


@pytest.mark.parametrize("n", [5_000, 10**9])
def test_a_sample_of_partitions_is_the_sample_of_the_whole_whatever_the_partitions(tx, tmp_path, n):
    since = tx["timestamp"].quantile(0.5)
    eligible = tx[tx["timestamp"] >= since]
    whole = set(eligible["transaction_id"][sampling.stratified(eligible["transaction_id"], eligible["is_fraud"], n, seed=3)])
    for count in (1, 4, 7):
        parts = partitions.write(tx, tmp_path / str(count), count)
        sample, population = sampling.sample_partitions(parts, "transaction_id", "is_fraud", n, seed=3, since=since)
        assert set(sample["transaction_id"]) == whole and sample["transaction_id"].is_unique
        assert population == eligible["is_fraud"].value_counts().to_dict()
    assert len(whole) == min(n, len(eligible))
    frauds = eligible["transaction_id"][eligible["is_fraud"] == 1]
    assert len(whole & set(frauds)) == sampling.quotas(population, n)[1] > 0  # the fraud rate kept


def test_the_customer_sample_is_everyone_until_there_are_more_than_n():
    ids = ["a", "b", "a", "c"]
    assert sampling.customers_sample(ids, 3, seed=1) is None
    assert len(sampling.customers_sample(ids, 2, seed=1)) == 2
