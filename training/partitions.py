"""Transactions split by customer, and the per-customer features computed one partition at a time.

A customer's partition is a stable hash of its id (SipHash with a fixed key, pandas' `hash_array`)
modulo the partition count: the same id lands in the same partition in every run, on every machine,
so a customer's transactions are never split and anything computed per customer (the features of
training/features.py are) can run on one partition without the others.

    parts = write(transactions, folder / "transactions", partitions=16)
    table = read_features(features_by_partition(parts, snapshots, folder / "features", engine="ray"))

`engine="local"` runs the partitions one after the other in this process; `engine="ray"` runs each
as a Ray task, on a local Ray started with this machine's cores, or on the cluster `RAY_ADDRESS`
names. Plain tasks rather than Ray Data: the unit of work is a whole partition (a customer's
history must stay together), which is what a task is, and each writes its own file. A task writes
to a temporary name and renames it when done, so a task killed and retried leaves one whole file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from training.features import ENTITY, TIMESTAMP, compute_features

log = logging.getLogger(__name__)

HASH_KEY = "fintech/customer"  # SipHash takes 16 bytes; changing it moves every customer to another partition
ENGINES = ("local", "ray")


def partition_of(customer_ids, partitions: int) -> np.ndarray:
    """Each id's partition, 0 ≤ p < partitions."""
    hashed = pd.util.hash_array(np.asarray(customer_ids, dtype=object), hash_key=HASH_KEY, categorize=True)
    return (hashed % np.uint64(partitions)).astype(np.int64)


def part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def write(tx: pd.DataFrame, folder: Path, partitions: int) -> list[Path]:
    """`tx` as `partitions` Parquet files under `folder` (its old parts removed), each a set of whole
    customers ordered by customer and time. A partition no customer hashes to is an empty file."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    number = partition_of(tx[ENTITY], partitions)
    paths = []
    for p in range(partitions):
        path = folder / part_name(p)
        tx[number == p].sort_values([ENTITY, "timestamp"], kind="stable").to_parquet(path, index=False)
        paths.append(path)
    return paths


def _features_of_part(part: Path, snapshots: list[pd.Timestamp], out: Path,
                      compute: Callable[[pd.DataFrame, list[pd.Timestamp]], pd.DataFrame]) -> int:
    """One partition's feature rows to `out`, written whole or not at all; its transactions, counted."""
    tx = pd.read_parquet(part)
    table = compute(tx, snapshots) if len(tx) else pd.DataFrame()
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    table.to_parquet(partial, index=False)
    os.replace(partial, out)
    return len(tx)


def features_by_partition(parts: list[Path], snapshots: list[pd.Timestamp], out_dir: Path, engine: str = "local",
                          progress: bool = True, compute=compute_features, max_retries: int = 3) -> list[Path]:
    """compute(partition's transactions, snapshots) for every partition, written to out_dir under the
    partition's own name; the paths, in the order of `parts`. `compute` is training/features.py's
    unless a caller (a test) gives another."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("part-*.parquet"), *out_dir.glob(".part-*.partial")]:  # an earlier run's, or a killed task's
        stale.unlink()
    outs = [out_dir / part.name for part in parts]
    started, transactions = time.perf_counter(), 0
    bar = tqdm(total=len(parts), desc=f"features ({engine})", unit="partition", disable=not progress)

    def done(counted: int) -> None:
        nonlocal transactions
        transactions += counted
        bar.update()
        bar.set_postfix_str(f"{transactions / (time.perf_counter() - started):,.0f} transactions/s")

    if engine == "local":
        for part, out in zip(parts, outs):
            done(_features_of_part(part, snapshots, out, compute))
    else:
        import ray

        _ray_started()
        task = ray.remote(max_retries=max_retries)(_features_of_part)
        pending = [task.remote(part, snapshots, out, compute) for part, out in zip(parts, outs)]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            done(ray.get(finished[0]))
    bar.close()
    log.info("features of %s partitions (%s transactions) in %.1f s on the %s engine", len(parts), f"{transactions:,}",
             time.perf_counter() - started, engine)
    return outs


def _ray_started() -> None:
    """Ray, if this process has not started or joined it yet: the cluster RAY_ADDRESS names, or a
    local one with this machine's cores (RAY_NUM_CPUS to take fewer) and no dashboard."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:
        cpus = int(os.environ["RAY_NUM_CPUS"]) if os.environ.get("RAY_NUM_CPUS") else None
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)


def read_features(paths: list[Path]) -> pd.DataFrame:
    """The partitions' feature rows as one table, in the order one process computes them (snapshot,
    then customer id)."""
    frames = [frame for frame in map(pd.read_parquet, paths) if len(frame)]
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values([TIMESTAMP, ENTITY], kind="stable").reset_index(drop=True)
