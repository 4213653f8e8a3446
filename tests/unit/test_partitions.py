"""Transactions split by customer and the features computed a partition at a time, in this process
(training/partitions.py; the Ray engine: tests/integration/test_partitions_ray.py)."""

import functools
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


def test_transactions_written_batch_by_batch_land_as_when_written_at_once(tx, tmp_path):
    at_once = partitions.write(tx, tmp_path / "once", 4)
    parts = partitions.cleared(tmp_path / "batches", 4)
    for batch, start in enumerate(range(0, len(tx), 7_000)):
        partitions.write_batch(tx.iloc[start:start + 7_000], parts, batch)
    partitions.write_batch(tx.iloc[7_000:14_000], parts, 1)  # a batch written again (a retried task) replaces itself
    touched = sum(len(set(partitions.partition_of(tx["customer_id"].iloc[start:start + 7_000], 4)))
                  for start in range(0, len(tx), 7_000))
    assert len(list((tmp_path / "batches").glob("part-*/batch-*.parquet"))) == touched  # a file per batch and partition it reaches
    for a, b in zip(at_once, parts, strict=True):
        pd.testing.assert_frame_equal(partitions.read_part(a), partitions.read_part(b), check_exact=True)
    pd.testing.assert_frame_equal(partitions.read_transactions(tmp_path / "batches"),
                                  tx.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True))


def test_a_partition_no_customer_hashes_to_reads_as_empty(tx, tmp_path):
    parts = partitions.write(tx.head(1), tmp_path, 3)
    assert sorted(len(partitions.read_part(p)) for p in parts) == [0, 0, 1]


def test_partition_files_concatenate_into_one_with_every_row_once(tmp_path):
    frames = [pd.DataFrame({"customer_id": ["a", "b"], "note": ["x", "y"]}), pd.DataFrame(),
              pd.DataFrame({"customer_id": ["c"], "note": [None]})]  # an empty partition; a column all missing
    paths = [tmp_path / f"part-{i:05d}.parquet" for i in range(3)]
    for frame, path in zip(frames, paths):
        frame.to_parquet(path, index=False)
    assert partitions.concatenate(paths, tmp_path / "all.parquet") == 3
    got = pd.read_parquet(tmp_path / "all.parquet")
    assert got["customer_id"].tolist() == ["a", "b", "c"] and got["note"].tolist() == ["x", "y", None]


def test_each_partitions_features_labels_and_stream_rows_are_the_whole_datas(tx, tmp_path):
    """The pipeline's job on 3 partitions: together, exactly what one process computes from all of it."""
    from core.stream_features import offline_table
    from training.pipeline import TABLES, offline_tables

    tx = tx[tx["customer_id"].isin(tx["customer_id"].unique()[:150])]
    snapshots = features.snapshot_dates(tx, 30, 90)
    job = functools.partial(offline_tables, snapshots=snapshots, data_end=tx["timestamp"].max(), horizon_days=60)
    outs = partitions.by_partition(partitions.write(tx, tmp_path / "tx", 3), {n: tmp_path / n for n in TABLES}, job,
                                   progress=False)
    whole = features.compute_features(tx, snapshots)
    expected = {"features": whole, "labels": features.churn_labels(tx, whole, 60), "stream": offline_table(tx)}
    for name, keys in [("features", ["event_timestamp", "customer_id"]), ("labels", ["event_timestamp", "customer_id"]),
                       ("stream", ["customer_id", "event_timestamp", "transaction_id"])]:
        assert partitions.concatenate(outs[name], tmp_path / f"{name}.parquet") == len(expected[name])
        got = pd.read_parquet(tmp_path / f"{name}.parquet").sort_values(keys, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected[name].sort_values(keys, kind="stable").reset_index(drop=True),
                                      check_exact=True)
