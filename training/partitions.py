"""Transactions split by customer, and the per-customer features computed one partition at a time.

A customer's partition is a stable hash of its id (SipHash with a fixed key, pandas' `hash_array`)
modulo the partition count: the same id lands in the same partition in every run, on every machine,
so a customer's transactions are never split and anything computed per customer (the features of
training/features.py are) can run on one partition without the others.

    checked, parts = check_into_partitions(raw_file, folder / "transactions", 16, rejects_csv, engine="ray")
    outs = by_partition(parts, {"features": folder / "features"}, job, engine="ray")
    concatenate(outs["features"], folder / "customer_features.parquet")

A partition is a folder of Parquet files, one per batch of the raw file that reached it
(part-00003.parquet/batch-00012.parquet), so the file's batches can be checked side by side, each
writing its own files; it reads as one table (`read_part`) in batch order.

`job(transactions)` returns the partition's tables by name (features, labels, ...), each written to
its own folder under the partition's name. `engine="local"` runs the partitions one after the other
in this process; `engine="ray"` runs each as a Ray task, on a local Ray started with this machine's
cores, or on the cluster `RAY_ADDRESS` names (the check, likewise, a batch per task). Plain tasks rather than Ray Data: the unit of work is a whole partition (a customer's
history must stay together), which is what a task is, and each writes its own files. A task writes
to a temporary name and renames it when done, so a task killed and retried leaves one whole file.
Nothing here holds more than one batch or one partition at a time.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from core import contract
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


def _write_whole(out: Path, write: Callable[[Path], object]) -> None:
    """write(path) to a temporary name beside `out`, then renamed to it: `out` is whole or absent,
    and a retried task's write replaces it."""
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    write(partial)
    os.replace(partial, out)


def cleared(folder: Path, partitions: int) -> list[Path]:
    """`partitions` empty partition folders under `folder` (an earlier run's removed), in order."""
    for old in folder.glob("part-*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    parts = [folder / part_name(p) for p in range(partitions)]
    for part in parts:
        part.mkdir(parents=True)
    return parts


def write_batch(tx: pd.DataFrame, parts: list[Path], batch: int) -> None:
    """A batch of transactions into the partitions' folders, each row in its customer's partition,
    as one file per partition named by the batch number (so a partition reads in batch order).
    Each file is written whole or not at all, and writing the same batch again replaces it."""
    if not len(tx):
        return
    number = partition_of(tx[ENTITY], len(parts))
    table = pa.Table.from_pandas(tx, preserve_index=False).take(np.argsort(number, kind="stable"))
    bounds = np.r_[0, np.cumsum(np.bincount(number, minlength=len(parts)))]
    for p in np.flatnonzero(np.diff(bounds)):
        rows = table.slice(bounds[p], bounds[p + 1] - bounds[p])
        _write_whole(parts[p] / f"batch-{batch:05d}.parquet", functools.partial(pq.write_table, rows))


def write(tx: pd.DataFrame, folder: Path, partitions: int) -> list[Path]:
    """`tx` as `partitions` partitions under `folder`, at once (check_into_partitions for more than
    fits in memory)."""
    parts = cleared(folder, partitions)
    write_batch(tx, parts, 0)
    return parts


def read_part(part: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One partition's transactions (an empty frame for a partition no customer hashes to)."""
    return pd.read_parquet(part, columns=columns) if any(part.glob("batch-*.parquet")) else pd.DataFrame(columns=columns)


def read_transactions(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Every partition's transactions as one frame, ordered by customer then time (the order the
    contract's one-frame check gives); for data that fits in memory."""
    tx = pd.read_parquet(folder, columns=columns)  # every partition's every batch
    return tx.sort_values([ENTITY, "timestamp"], kind="stable").reset_index(drop=True)


def _check_and_write(batch: pd.DataFrame, start: int, number: int, duplicates: np.ndarray, known: set[str] | None,
                     parts: list[Path], rejects: Path) -> contract.CheckedFile:
    """Batch `number` of the file (its rows from row `start` on): accepted rows into the partitions,
    rejected ones into the rejects folder as batch-<number>.csv."""
    result = contract.check_batch(batch, start, duplicates, known)
    write_batch(result.accepted, parts, number)
    _write_whole(rejects / f"batch-{number:05d}.csv", functools.partial(result.rejected.to_csv, index=False))
    return contract.CheckedFile.of(result)


def _check_row_groups(path: Path, start: int, groups: list[int], number: int, duplicates: np.ndarray,
                      known: set[str] | None, parts: list[Path], rejects: Path) -> tuple[contract.CheckedFile, int]:
    batch = contract.read_row_groups(path, groups)
    return _check_and_write(batch, start, number, duplicates, known, parts, rejects), len(batch)


def check_into_partitions(path: Path, folder: Path, partitions: int, rejects_path: Path, known: set[str] | None = None,
                          engine: str = "local", progress: bool = True, rows: int = contract.BATCH_ROWS,
                          max_retries: int = 3, duplicates: np.ndarray | None = None) -> tuple[contract.CheckedFile, list[Path]]:
    """Check a transactions file of any size against the contract, `rows` at a time, into
    `partitions` partitions under `folder`, its rejected rows (as read, with their reasons) into
    `rejects_path` (CSV, in file order, written even when empty): what the file's check in one frame
    would accept and reject. With engine="ray", a Parquet file's batches (runs of row groups) are
    checked as Ray tasks side by side; a CSV, which can only be read from its start, is checked in
    this process whatever the engine. The ids' duplicate pass runs first, here, over the whole file,
    unless its result (contract.duplicate_rows) is given."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    if duplicates is None:
        duplicates = contract.duplicate_rows(path, rows, progress)
    parts = cleared(folder, partitions)
    rejects = rejects_path.with_name(f".{rejects_path.stem}.batches")
    if rejects.exists():
        shutil.rmtree(rejects)
    rejects.mkdir(parents=True)
    spans = contract.row_group_spans(path, rows) if engine == "ray" else None
    checked = contract.CheckedFile()
    bar = tqdm(total=contract.rows_in(path), desc=f"checking transactions ({engine if spans else 'local'})", unit="row",
               unit_scale=True, disable=not progress)
    if spans:
        import ray

        _ray_started()
        task = ray.remote(max_retries=max_retries)(_check_row_groups)
        shared = ray.put(duplicates), ray.put(known)
        pending = [task.remote(path, start, groups, number, *shared, parts, rejects) for number, (start, groups) in enumerate(spans)]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            seen, counted = ray.get(finished[0])
            checked.merge(seen)
            bar.update(counted)
    else:
        start = 0
        for number, batch in enumerate(contract.read_batches(path, rows)):
            checked.merge(_check_and_write(batch, start, number, duplicates, known, parts, rejects))
            start += len(batch)
            bar.update(len(batch))
    bar.close()
    _join_csv(sorted(rejects.glob("batch-*.csv")), rejects_path)
    shutil.rmtree(rejects)
    return checked, parts


def _join_csv(pieces: list[Path], out: Path) -> None:
    """CSV files with the same header as one, the header once."""
    with out.open("wb") as joined:
        for i, piece in enumerate(pieces):
            with piece.open("rb") as lines:
                if i:
                    lines.readline()
                shutil.copyfileobj(lines, joined)


Job = Callable[[pd.DataFrame], dict[str, pd.DataFrame]]


def _run_part(part: Path, outs: dict[str, Path], job: Job) -> int:
    """One partition's tables, each written whole or not at all; its transaction count. A partition
    with no transactions gets empty files."""
    tx = read_part(part)
    tables = job(tx) if len(tx) else {}
    for name, out in outs.items():
        _write_whole(out, functools.partial(tables.get(name, pd.DataFrame()).to_parquet, index=False))
    return len(tx)


def by_partition(parts: list[Path], out_dirs: dict[str, Path], job: Job, engine: str = "local", progress: bool = True,
                 max_retries: int = 3, desc: str = "partitions") -> dict[str, list[Path]]:
    """job(partition's transactions) for every partition; each table it returns by name goes to
    out_dirs[name] under the partition's own name. The paths by name, in the order of `parts`."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    for out_dir in out_dirs.values():
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*out_dir.glob("part-*.parquet"), *out_dir.glob(".part-*.partial")]:  # an earlier run's, or a killed task's
            stale.unlink()
    outs = [{name: out_dir / part.name for name, out_dir in out_dirs.items()} for part in parts]
    started, transactions = time.perf_counter(), 0
    bar = tqdm(total=len(parts), desc=f"{desc} ({engine})", unit="partition", disable=not progress)

    def done(counted: int) -> None:
        nonlocal transactions
        transactions += counted
        bar.update()
        bar.set_postfix_str(f"{transactions / (time.perf_counter() - started):,.0f} transactions/s")

    if engine == "local":
        for part, out in zip(parts, outs):
            done(_run_part(part, out, job))
    else:
        import ray

        _ray_started()
        task = ray.remote(max_retries=max_retries)(_run_part)
        pending = [task.remote(part, out, job) for part, out in zip(parts, outs)]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            done(ray.get(finished[0]))
    bar.close()
    log.info("%s of %s partitions (%s transactions) in %.1f s on the %s engine", desc, len(parts), f"{transactions:,}",
             time.perf_counter() - started, engine)
    return {name: [out[name] for out in outs] for name in out_dirs}


def _features_only(tx: pd.DataFrame, snapshots: list[pd.Timestamp], compute) -> dict[str, pd.DataFrame]:
    return {"features": compute(tx, snapshots)}


def features_by_partition(parts: list[Path], snapshots: list[pd.Timestamp], out_dir: Path, engine: str = "local",
                          progress: bool = True, compute=compute_features, max_retries: int = 3) -> list[Path]:
    """compute(partition's transactions, snapshots) for every partition, written to out_dir under the
    partition's own name; the paths, in the order of `parts`. `compute` is training/features.py's
    unless a caller (a test) gives another."""
    job = functools.partial(_features_only, snapshots=snapshots, compute=compute)
    return by_partition(parts, {"features": out_dir}, job, engine, progress, max_retries, desc="features")["features"]


def concatenate(paths: list[Path], out: Path) -> int:
    """The partitions' files as one Parquet file, row group by row group (never a whole table in
    memory), in partition order; its row count. Empty partitions are skipped."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    writer, rows = None, 0
    try:
        for path in paths:
            source = pq.ParquetFile(path)
            if not source.metadata.num_rows:
                continue
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                if writer is None:
                    writer = pq.ParquetWriter(partial, table.schema)
                elif not table.schema.equals(writer.schema, check_metadata=False):
                    table = table.cast(writer.schema)  # a column all missing in this partition (null type)
                writer.write_table(table)
                rows += len(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError(f"{out.name}: every partition is empty")
    os.replace(partial, out)
    return rows


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
