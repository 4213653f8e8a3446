"""The Ray engine (training/partitions.py) on a real local Ray with 2 CPUs: the same features as the
local engine, and a partition task killed mid-run is retried with nothing lost or counted twice."""

import os

import pandas as pd
import pytest

from training import features, partitions

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def parts(small_raw, tmp_path_factory):
    raw, _ = small_raw
    tx = pd.read_parquet(raw / "transactions.parquet")
    return tx, partitions.write(tx, tmp_path_factory.mktemp("tx"), 6), features.snapshot_dates(tx, 30, 90)


def test_the_ray_engine_gives_the_local_engines_features_row_for_row(parts, tmp_path, local_ray):
    tx, paths, snapshots = parts
    local = partitions.features_by_partition(paths, snapshots, tmp_path / "local", "local", progress=False)
    ray = partitions.features_by_partition(paths, snapshots, tmp_path / "ray", "ray", progress=False)
    assert [p.name for p in ray] == [p.name for p in local]
    for a, b in zip(local, ray):
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
    assert len(partitions.read_features(ray)) > len(tx["customer_id"].unique())


def test_a_partition_task_killed_mid_run_is_retried_and_nothing_is_lost_or_doubled(parts, tmp_path, local_ray):
    tx, paths, snapshots = parts
    victim = pd.read_parquet(paths[2])["customer_id"].iloc[0]
    killed = tmp_path / "killed"

    def dies_once(frame, snaps):  # the worker process ends, as a node lost or an OOM kill would end it
        if victim in set(frame["customer_id"]) and not killed.exists():
            killed.touch()
            os._exit(1)
        return features.compute_features(frame, snaps)

    got = partitions.read_features(partitions.features_by_partition(paths, snapshots, tmp_path / "ray", "ray",
                                                                    progress=False, compute=dies_once))
    assert killed.exists()  # the task did die once
    pd.testing.assert_frame_equal(got, features.compute_features(tx, snapshots), check_exact=True)
    assert not got.duplicated(["customer_id", "event_timestamp"]).any()
    assert not list((tmp_path / "ray").glob(".*partial"))


def test_the_ray_check_of_a_parquet_file_gives_the_local_checks_partitions_and_rejects(tmp_path, local_ray):
    from core import contract
    from tests.data.test_contract import bad_and_duplicated_rows

    path = tmp_path / "transactions.parquet"
    bad_and_duplicated_rows().to_parquet(path, row_group_size=4)  # batches of two row groups, side by side
    assert [start for start, _ in contract.row_group_spans(path, rows=8)][:3] == [0, 8, 16]
    runs = {engine: partitions.check_into_partitions(path, tmp_path / engine, 3, tmp_path / f"{engine}.csv", engine=engine,
                                                     rows=8, progress=False) for engine in ("local", "ray")}
    assert runs["ray"][0] == runs["local"][0] and runs["ray"][0].rejected_rows > 5
    for a, b in zip(runs["local"][1], runs["ray"][1], strict=True):
        pd.testing.assert_frame_equal(partitions.read_part(a), partitions.read_part(b), check_exact=True)
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "local.csv").read_text()
