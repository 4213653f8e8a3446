"""Transactions split by customer and the features computed a partition at a time, in this process
(training/partitions.py; the Ray engine: tests/integration/test_partitions_ray.py)."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from core.settings import REPO_ROOT as ROOT
from training import features, partitions


def test_a_customer_lands_in_the_same_partition_whatever_is_hashed_beside_it():
    ids = ["C0000001", "C0000002", "C0000003", "C9999999"]
    # pinned: partitions written by an earlier run must still be found where they were
    assert partitions.partition_of(ids, 16).tolist() == [13, 5, 9, 1]
    assert partitions.partition_of(["C0000003"], 16).tolist() == [9]
    assert partitions.partition_of(ids[::-1], 16).tolist() == [1, 9, 5, 13]


@pytest.fixture(scope="module")
def tx(small_raw):
    raw, _ = small_raw
    return pd.read_parquet(raw / "transactions.parquet")


def test_every_transaction_is_in_one_partition_once_and_no_customer_in_two(tx, tmp_path):
    paths = partitions.write(tx, tmp_path, 8)
    assert [p.name for p in paths] == [f"part-{i:05d}.parquet" for i in range(8)]
    parts = pd.concat([pd.read_parquet(p).assign(part=i) for i, p in enumerate(paths)], ignore_index=True)
    assert len(parts) == len(tx) and set(parts["transaction_id"]) == set(tx["transaction_id"])
    assert parts["transaction_id"].is_unique
    assert parts.groupby("customer_id")["part"].nunique().max() == 1
    assert parts["part"].nunique() == 8
    # written again with fewer partitions: the old parts are gone
    assert len(partitions.write(tx, tmp_path, 3)) == 3 and len(list(tmp_path.glob("part-*.parquet"))) == 3


def test_the_local_engine_gives_the_features_of_one_process_row_for_row(tx, tmp_path):
    snapshots = features.snapshot_dates(tx, 30, 90)
    paths = partitions.features_by_partition(partitions.write(tx, tmp_path / "tx", 5), snapshots, tmp_path / "features",
                                             "local", progress=False)
    pd.testing.assert_frame_equal(partitions.read_features(paths), features.compute_features(tx, snapshots), check_exact=True)


def test_an_unknown_engine_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="unknown engine 'spark'; known: local, ray"):
        partitions.features_by_partition([], [], tmp_path, "spark")


def test_an_earlier_runs_parts_and_a_killed_tasks_partial_file_are_cleared(tx, tmp_path):
    out = tmp_path / "features"
    out.mkdir()
    (out / "part-00009.parquet").write_bytes(b"from a run with more partitions")
    (out / ".part-00000.parquet.123.partial").write_bytes(b"half written")
    paths = partitions.features_by_partition(partitions.write(tx.head(2000), tmp_path / "tx", 2),
                                             [pd.Timestamp("2026-01-01", tz="UTC")], out, "local", progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths) == ["part-00000.parquet", "part-00001.parquet"]


@pytest.mark.parametrize("variable, value", [("ENGINE", "spark"), ("PARTITIONS", "0")])
def test_a_bad_engine_or_partition_count_in_the_environment_is_named_by_the_cli(variable, value, tmp_path):
    done = subprocess.run([sys.executable, "-m", "training", "features", "--data-dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, check=False, env={**os.environ, variable: value})
    assert done.returncode == 2 and f"error: {variable}:" in done.stderr and "Traceback" not in done.stderr
