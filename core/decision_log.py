"""The inference log's records: the Parquet files, the hash chain that links them, and the journal
each decision is written to before it is answered. The service writes them (bentos/inference_log.py);
`python -m monitoring verify | replay | recover-log` read them.

    DATA_DIR/inference_log/<family>/date=YYYY-MM-DD/part-<HHMMSS>-<writer>-<n>.parquet
    DATA_DIR/inference_log/<family>/_journal/<writer>-<n>.wal      (a leading underscore: readers skip it)

A writer is one process's log of one family (`<host>-<pid>-<token>`). Its rows are numbered (`seq`,
from 1) and each carries `chain`, the SHA-256 of the previous row's `chain` and of its own content
(`content`): editing, removing, reordering or inserting a row breaks the chain there, and
`check_chain` names the row. Each file's metadata holds its writer, its number, the `chain` of the
row before its first one, and the features of each version in it (the columns a row was scored
with). The chain has no key: it shows what changed to whoever holds a head the writer reported
(each file written is logged with its last `seq` and `chain`), not to whoever can rewrite the
files and every later record.

The journal is a writer's batches as they are scored, numbered and appended (and, with `fsync`,
flushed to the disk) before the answers leave: a process killed at any moment has every answered
decision in its journal, and `recover` turns a dead writer's journal into Parquet files that carry
its chain on from its last file. The chain itself is computed when the rows are written as a file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from pydantic_core import to_json

SCORING_SCOPE = "inference"  # the scope every logged prediction was made under (bentos/auth.py)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GENESIS = "0" * 64  # the `chain` before a writer's first row
JOURNAL = "_journal"
MAGIC = b"FJ01"
FRAME = struct.Struct("<4sII")  # magic, header bytes, matrix bytes
PRUNED = "_pruned.jsonl"  # what `prune-log` removed, per writer: where each chain now starts
WRITER_KEY, FILE_KEY, PREVIOUS_KEY, FEATURES_KEY = b"fintech.writer", b"fintech.file", b"fintech.previous", b"fintech.features"
SEGMENT_NAME = re.compile(r"(?P<writer>.+)-(?P<n>\d{6})\.wal")


@dataclass
class Batch:
    """Rows scored together by one version, in the order they were chained."""

    time: datetime
    version: str
    role: str
    features: tuple[str, ...]
    request_ids: list[str]
    client_ids: list[str]
    overridden: list[bool]
    customer_ids: list[str]
    scores: list[float]
    decisions: list[str]
    matrix: np.ndarray  # rows x features, float64, NaN where a value was missing
    first_seq: int = 0
    previous: str = GENESIS
    chain: list[str] = field(default_factory=list)
    rules: list[str] | None = None  # per row, fraud's rules that hit (core/rules.py: as_logged); None: no rules

    def __len__(self) -> int:
        return len(self.request_ids)

    def link(self, family: str, previous: str) -> str:
        """Chain the rows (numbered from first_seq) after `previous`; the last row's chain. The files'
        writer does it, off the request path: a row's chain follows from its content alone."""
        self.previous, self.chain = previous, []
        time_ns = (self.time - EPOCH) // timedelta(microseconds=1) * 1000
        named = ",".join(self.features)
        values = canonical(self.matrix)
        for i in range(len(self)):
            previous = link(previous, content(
                family, self.first_seq + i, time_ns, self.request_ids[i], self.client_ids[i], self.customer_ids[i], self.version,
                self.role, self.scores[i], self.decisions[i], self.overridden[i], named, values[i],
                self.rules[i] if self.rules else ""))
            self.chain.append(previous)
        return previous


def canonical(matrix: np.ndarray) -> np.ndarray:
    """float64, little-endian, every missing value the same NaN (as one read back from a null is)."""
    values = np.ascontiguousarray(matrix, dtype="<f8")
    missing = np.isnan(values)
    if missing.any():
        values = np.where(missing, np.nan, values)
    return values


def content(family: str, seq: int, time_ns: int, request_id: str, client_id: str, customer_id: str, version: str,
            role: str, score: float, decision: str, overridden: bool, features: str, values: np.ndarray,
            rules: str = "") -> bytes:
    """What a row's chain covers: every column, and the names of the features its values are of.
    The rules that hit are appended only when some did: a row without them (every row written
    before rules existed) covers what it always did."""
    text = "\x1f".join((family, str(seq), str(time_ns), request_id, client_id, SCORING_SCOPE if client_id else "",
                        customer_id, version, role, decision, "1" if overridden else "0", features,
                        *((rules,) if rules else ())))
    return text.encode() + struct.pack("<d", score) + values.tobytes()


def link(previous: str, row: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + row).hexdigest()


# --- Parquet ---------------------------------------------------------------------------------------

def table_of(family: str, batches: list[Batch]):
    """One pyarrow table of the batches, rows in chain order (versions may read different features:
    a column missing from one is null there)."""
    import pyarrow as pa

    tables = []
    for features in dict.fromkeys(b.features for b in batches):
        chosen = [b for b in batches if b.features == features]
        sizes = [len(b) for b in chosen]
        matrix = np.vstack([b.matrix for b in chosen])
        times = np.repeat(np.array([b.time.replace(tzinfo=None) for b in chosen], dtype="datetime64[ns]"), sizes)
        client_ids = [c for b in chosen for c in b.client_ids]
        columns = {
            "request_id": pa.array([r for b in chosen for r in b.request_ids], pa.string()),
            "client_id": pa.array(client_ids, pa.string()),
            "scope": pa.array([SCORING_SCOPE if c else "" for c in client_ids], pa.string()),
            "time": pa.array(times, pa.timestamp("ns", tz="UTC")),
            "customer_id": pa.array([c for b in chosen for c in b.customer_ids], pa.string()),
            "model": pa.array([family] * len(times), pa.string()),
            "version": pa.array(np.repeat([b.version for b in chosen], sizes), pa.string()),
            "role": pa.array(np.repeat([b.role for b in chosen], sizes), pa.string()),
            "score": pa.array(np.concatenate([b.scores for b in chosen]), pa.float64()),
            "decision": pa.array([d for b in chosen for d in b.decisions], pa.string()),
            "overridden": pa.array([o for b in chosen for o in b.overridden], pa.bool_()),
        }
        if any(b.rules is not None for b in chosen):
            columns["rules"] = pa.array([r for b in chosen for r in (b.rules or [""] * len(b))], pa.string())
        if all(b.chain for b in chosen):  # numbered and chained (a log with its journal off is neither)
            columns["seq"] = pa.array(np.concatenate([np.arange(b.first_seq, b.first_seq + len(b)) for b in chosen]), pa.int64())
            columns["chain"] = pa.array([c for b in chosen for c in b.chain], pa.string())
        # from_pandas: a missing feature (NaN) is stored as null, as pandas stored it
        columns |= {name: pa.array(matrix[:, i], pa.float64(), from_pandas=True) for i, name in enumerate(features)}
        tables.append(pa.table(columns))
    table = pa.concat_tables(tables, promote_options="default")
    if len(tables) == 1 or "seq" not in table.column_names:
        return table
    return table.take(np.argsort(table["seq"].to_numpy(), kind="stable"))


def write_file(directory: Path, family: str, writer: str, number: int, batches: list[Batch], durable: bool = False) -> Path:
    """The batches as the writer's file `number`, in a folder of the first batch's day; renamed into
    place whole (readers never see half a file), flushed to the disk first when `durable`."""
    import pyarrow.parquet as pq

    table = table_of(family, batches)
    if "chain" in table.column_names:  # what `verify` needs to follow the chain through the file
        features = {b.version: list(b.features) for b in batches}
        table = table.replace_schema_metadata({WRITER_KEY: writer.encode(), FILE_KEY: str(number).encode(),
                                               PREVIOUS_KEY: batches[0].previous.encode(), FEATURES_KEY: json.dumps(features).encode()})
    when = batches[0].time
    folder = directory / f"date={when:%Y-%m-%d}"
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    path = folder / f"part-{when:%H%M%S}-{writer}-{number:06d}.parquet"
    temporary = path.with_name(f".{path.stem}.tmp")  # a leading dot: dataset readers skip it
    try:
        pq.write_table(table, temporary)
        temporary.chmod(0o640)  # personal data: the service's group, no one else
        if durable:
            sync(temporary)
        temporary.rename(path)
        if durable:
            sync(folder)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    return path


def sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass
class LogFile:
    """A file of the log as its footer describes it."""

    path: Path
    writer: str | None  # None: written before the chain
    number: int
    previous: str
    features: dict[str, list[str]]
    rows: int


def log_files(directory: Path) -> list[LogFile]:
    """Every Parquet file of one family's log, by writer and number."""
    import pyarrow.parquet as pq

    found = []
    for path in sorted(directory.glob("date=*/part-*.parquet")):
        meta = pq.read_metadata(path)
        kv = meta.metadata or {}
        writer = kv.get(WRITER_KEY)
        found.append(LogFile(path, writer.decode() if writer else None, int(kv.get(FILE_KEY, b"0")),
                             kv.get(PREVIOUS_KEY, GENESIS.encode()).decode(), json.loads(kv.get(FEATURES_KEY, b"{}")),
                             meta.num_rows))
    return sorted(found, key=lambda f: (f.writer or "", f.number, str(f.path)))


# --- the journal -------------------------------------------------------------------------------------

def journal_record(batch: Batch) -> bytes:
    """One batch as the journal holds it: a frame, a JSON header, the feature matrix's bytes."""
    header = to_json({
        "time": batch.time.isoformat(), "version": batch.version, "role": batch.role, "features": batch.features,
        "request_ids": batch.request_ids, "client_ids": batch.client_ids, "overridden": batch.overridden,
        "customer_ids": batch.customer_ids, "scores": batch.scores, "decisions": batch.decisions, "first_seq": batch.first_seq,
        "rules": batch.rules})
    matrix = np.ascontiguousarray(batch.matrix, dtype="<f8").tobytes()
    return FRAME.pack(MAGIC, len(header), len(matrix)) + header + matrix


def journal_batches(data: bytes) -> Iterator[Batch]:
    """The whole records of a journal, in order; a torn last one (the process died writing it, before
    its answers left) ends it."""
    at = 0
    while at + FRAME.size <= len(data):
        magic, header_size, matrix_size = FRAME.unpack_from(data, at)
        end = at + FRAME.size + header_size + matrix_size
        if magic != MAGIC or end > len(data):
            return
        try:
            header = json.loads(data[at + FRAME.size:at + FRAME.size + header_size])
        except ValueError:
            return
        features = tuple(header["features"])
        matrix = np.frombuffer(data[end - matrix_size:end], dtype="<f8").reshape(len(header["request_ids"]), len(features))
        yield Batch(datetime.fromisoformat(header["time"]), header["version"], header["role"], features,
                    header["request_ids"], header["client_ids"], header["overridden"], header["customer_ids"],
                    header["scores"], header["decisions"], matrix.copy(), header["first_seq"], rules=header.get("rules"))
        at = end


def segment_path(directory: Path, writer: str, number: int) -> Path:
    return directory / JOURNAL / f"{writer}-{number:06d}.wal"


def open_segment(path: Path) -> int:
    """A journal segment opened for appending and locked: `recover` leaves a locked one alone."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    unnamed = path.with_name(f".{path.name}.new")  # locked before it has its name: never seen unlocked
    descriptor = os.open(unnamed, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(unnamed, path)
    return descriptor


def recover(directory: Path, family: str, durable: bool = False) -> list[tuple[Path, int]]:
    """Write the journals of writers that are gone (their segments unlocked) as Parquet files of
    their chains, and remove them; the files written and their rows. Rows a file of the writer
    already holds (it died between writing a file and removing the segment) are not written twice."""
    segments = [(m, p) for p in sorted((directory / JOURNAL).glob("*.wal")) if (m := SEGMENT_NAME.fullmatch(p.name))]
    written: list[tuple[Path, int]] = []
    files: list[LogFile] | None = None
    for match, path in segments:  # a writer's in their order
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # another process recovered it meanwhile
            continue
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its writer is alive
                continue
            try:
                same = os.fstat(descriptor).st_ino == path.stat().st_ino
            except FileNotFoundError:
                same = False
            if not same:
                continue  # recovered and removed while this process waited for the lock
            writer = match["writer"]
            files = log_files(directory) if files is None else files
            done, head = last_row([f for f in files if f.writer == writer], pruned_heads(directory).get(writer))
            batches = [kept for b in journal_batches(read_all(descriptor)) if (kept := rows_after(b, done)) is not None]
            if batches:
                for batch in batches:  # the chain continues from the writer's last row in a file
                    head = batch.link(family, head)
                number = max((f.number for f in files if f.writer == writer), default=0) + 1
                out = write_file(directory, family, writer, number, batches, durable)
                written.append((out, sum(len(b) for b in batches)))
                files = None  # read again: the next segment of this writer continues after these
            path.unlink()
        finally:
            os.close(descriptor)
    return written


def read_all(descriptor: int) -> bytes:
    chunks = []
    while chunk := os.read(descriptor, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def last_row(files: list[LogFile], pruned: tuple[int, str] | None) -> tuple[int, str]:
    """A writer's last row in its files (its seq and chain); before any, where prune-log left its
    chain, or the chain's start."""
    import pyarrow.parquet as pq

    seq, chain = pruned or (0, GENESIS)
    for f in files:
        if f.writer is None or not f.rows:
            continue
        table = pq.read_table(f.path, columns=["seq", "chain"])
        at = int(np.argmax(table["seq"].to_numpy()))
        if int(table["seq"][at].as_py()) > seq:
            seq, chain = int(table["seq"][at].as_py()), table["chain"][at].as_py()
    return seq, chain


def pruned_heads(directory: Path) -> dict[str, tuple[int, str]]:
    """Per writer, the last row `prune-log` removed: where the rows that are left start."""
    path = directory / PRUNED
    heads: dict[str, tuple[int, str]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["seq"] > heads.get(entry["writer"], (0, ""))[0]:
                heads[entry["writer"]] = (entry["seq"], entry["chain"])
    return heads


def rows_after(batch: Batch, seq: int) -> Batch | None:
    """The batch's rows numbered after `seq`; None when it has none."""
    skip = max(0, seq - batch.first_seq + 1)
    if skip >= len(batch):
        return None
    if not skip:
        return batch
    keep = slice(skip, None)
    return Batch(batch.time, batch.version, batch.role, batch.features, batch.request_ids[keep], batch.client_ids[keep],
                 batch.overridden[keep], batch.customer_ids[keep], batch.scores[keep], batch.decisions[keep],
                 batch.matrix[keep], batch.first_seq + skip, rules=batch.rules[keep] if batch.rules else None)


def note_pruned(folder: Path) -> None:
    """Before a day's folder of one family's log is removed: append, per writer, its last row there
    to the family's PRUNED file, where `verify` learns that the writer's chain now starts after it."""
    files = [f for f in log_files(folder.parent) if f.writer is not None and f.path.parent == folder]
    heads = {writer: last_row([f for f in files if f.writer == writer], None) for writer in {f.writer for f in files}}
    heads = {writer: head for writer, head in heads.items() if head[0]}
    if heads:
        with (folder.parent / PRUNED).open("a") as out:
            out.writelines(json.dumps({"writer": w, "seq": s, "chain": c, "folder": folder.name}) + "\n" for w, (s, c) in heads.items())


class NoLog(ValueError):
    """There is no inference log to read (no folder, or no file in it yet)."""


def read_window(directory: Path, since: datetime | None = None, until: datetime | None = None,
                version: str | None = None, roles: tuple[str, ...] = ("champion", "challenger"),
                overridden: bool = False):
    """A window of the inference log of one family, as a DataFrame (shadow rows are left out unless `roles` names them),
    without the rows whose features the caller set unless `overridden` (a client's overrides are
    not the population's data, and must not move a drift report or trigger a retraining)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not directory.exists():
        raise NoLog(f"no inference log at {directory}")
    found = ds.dataset(directory, format="parquet", partitioning="hive")
    if not found.files:  # rows still in the journal (bentos/inference_log.py) are in no file yet
        raise NoLog(f"no inference log file under {directory} yet")
    # every file's columns (versions read different features; older files lack `overridden`)
    schema = pa.unify_schemas([found.schema, *(f.physical_schema for f in found.get_fragments())])
    dataset = ds.dataset(directory, format="parquet", partitioning="hive", schema=schema)
    condition = ds.field("role").isin(list(roles))
    if not overridden and "overridden" in schema.names:
        condition &= ds.field("overridden").is_null() | (ds.field("overridden") == False)  # noqa: E712 - an expression
    if since is not None:
        condition &= ds.field("time") >= _utc(since)
    if until is not None:
        condition &= ds.field("time") < _utc(until)
    if version is not None:
        condition &= ds.field("version") == version
    return dataset.to_table(filter=condition).to_pandas()


def _utc(moment: datetime):
    """A time as the log stores it: UTC, and a naive time (as --since parses) taken as UTC."""
    import pandas as pd

    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
