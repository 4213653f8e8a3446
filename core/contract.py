"""Check a transactions file against the data contract and split it into accepted and rejected rows.

A file that lacks a column, or whose column has the wrong type, is refused at once with a
:class:`ContractError` naming the column. Rows that break the contract are kept, with the reason,
in a rejects file, and counted; they are never dropped silently.

    result = load_transactions(Path("my_transactions.csv"), known_customers=ids)
    result.accepted        # clean rows in canonical types
    result.rejected        # the bad rows, as read, with a `reject_reason` column
    result.reason_counts   # {"amount is negative or zero": 3, ...}

A file of any size is checked batch by batch (training/partitions.py does it, in this process or
as Ray tasks): only the transaction ids are held whole, as 8-byte hashes, for the one check that
spans the file (a duplicate id may come a hundred million rows after the first).

    duplicates = duplicate_rows(Path("transactions.parquet"))
    for start, batch in ...:                                  # read_batches, or row_group_spans
        result = check_batch(batch, start, duplicates, ids)   # as the whole file's check would split it
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from core.schema import CHANNELS, MERCHANT_CATEGORIES, TRANSACTION_COLUMNS

# A text column in which fewer than this share of values parse is of the wrong type, not dirty.
MIN_PARSEABLE_SHARE = 0.5
EARLIEST_TIMESTAMP = pd.Timestamp("1990-01-01", tz="UTC")
BATCH_ROWS = 1_000_000  # rows read and checked at a time


class ContractError(ValueError):
    """The file as a whole does not follow the data contract."""


@dataclass
class ContractResult:
    accepted: pd.DataFrame
    rejected: pd.DataFrame
    reason_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"accepted {len(self.accepted):,} rows, rejected {len(self.rejected):,}"]
        lines += [f"  {count:,} × {reason}" for reason, count in sorted(self.reason_counts.items())]
        return "\n".join(lines)


def _kind(path: Path) -> str:
    if not path.exists():
        raise ContractError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt"):
        return "csv"
    raise ContractError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")


CSV_OPTIONS = {"dtype": str, "keep_default_na": False, "na_values": [""]}


def read_table(path: Path) -> pd.DataFrame:
    """Read Parquet or CSV by extension; CSV is read as text and typed by :func:`validate`."""
    if _kind(path) == "parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, **CSV_OPTIONS)


def read_batches(path: Path, rows: int = BATCH_ROWS, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The file `rows` at a time, in file order, typed as :func:`read_table` types them; at least
    one frame (an empty one for a file with no rows)."""
    kind, empty = _kind(path), True
    if kind == "parquet":
        batches = (b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns))
    else:
        batches = pd.read_csv(path, usecols=columns, chunksize=rows, **CSV_OPTIONS)
    for batch in batches:
        empty = False
        yield batch
    if empty:
        yield read_table(path) if columns is None else read_table(path)[columns]


def row_group_spans(path: Path, rows: int = BATCH_ROWS) -> list[tuple[int, list[int]]] | None:
    """A Parquet file cut into runs of whole row groups of about `rows` rows (a run holds one row group
    at least): each run's first row number and row groups, so that each can be read on its own
    (`read_row_groups`). None for a CSV, which can only be read from its start."""
    if _kind(path) != "parquet":
        return None
    metadata = pq.ParquetFile(path).metadata
    spans: list[tuple[int, list[int]]] = []
    start, size = 0, 0
    for group in range(metadata.num_row_groups):
        if not spans or size >= rows:
            spans.append((start, []))
            size = 0
        spans[-1][1].append(group)
        size += metadata.row_group(group).num_rows
        start += metadata.row_group(group).num_rows
    return spans


def read_row_groups(path: Path, groups: list[int]) -> pd.DataFrame:
    """Row groups of a Parquet file, typed as :func:`read_batches` types them."""
    return pq.ParquetFile(path).read_row_groups(groups).to_pandas()


def rows_in(path: Path) -> int | None:
    """The file's row count when its metadata says it (Parquet), else None."""
    return pq.ParquetFile(path).metadata.num_rows if _kind(path) == "parquet" else None


def _parse_column(frame: pd.DataFrame, column: str, kind: str) -> pd.Series:
    """Convert one column to its contract type; values that do not parse become NaN/NaT.

    Raises ContractError when the column as a whole is of the wrong type."""
    raw = frame[column]
    if kind == "string":
        if pd.api.types.is_float_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw):
            raise ContractError(f"column {column!r}: expected text, found {raw.dtype}")
        return raw.where(raw != "")
    if kind == "timestamp":
        if pd.api.types.is_datetime64_any_dtype(raw):
            return raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
        if pd.api.types.is_numeric_dtype(raw):
            raise ContractError(f"column {column!r}: expected a timestamp, found {raw.dtype}")
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
    elif kind in ("float", "label"):
        if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
            parsed = raw.astype(float)
        elif pd.api.types.is_datetime64_any_dtype(raw):
            raise ContractError(f"column {column!r}: expected a number, found {raw.dtype}")
        else:
            parsed = pd.to_numeric(raw, errors="coerce")
    else:  # pragma: no cover - the contract only has the kinds above
        raise AssertionError(kind)
    present = raw.notna().sum()
    if present and parsed.notna().sum() / present < MIN_PARSEABLE_SHARE:
        example = raw[raw.notna() & parsed.isna()].iloc[0]
        expected = "a timestamp" if kind == "timestamp" else "a number"
        raise ContractError(f"column {column!r}: expected {expected}, most values are not (e.g. {example!r})")
    return parsed


def require_columns(columns, contract=TRANSACTION_COLUMNS) -> None:
    """Refuse, naming them, the contract's columns that `columns` lack."""
    present = set(columns)
    missing = [c for c in contract if c not in present]
    if missing:
        raise ContractError(f"missing column(s): {', '.join(missing)}; the contract needs {', '.join(contract)}")


def columns_of(path: Path) -> list[str]:
    """A file's column names, from its schema (Parquet) or its header line (CSV)."""
    if _kind(path) == "parquet":
        return pq.ParquetFile(path).schema_arrow.names
    return list(pd.read_csv(path, nrows=0, **CSV_OPTIONS).columns)


def validate(frame: pd.DataFrame, known_customers: set[str] | None = None, labelled: bool = True,
             duplicate: np.ndarray | None = None) -> ContractResult:
    """Split a transactions frame into accepted rows (canonical types) and rejected rows with reasons.
    `labelled=False`: live events, which carry no `is_fraud` yet. `duplicate`: which rows repeat an
    id seen earlier (a boolean per row), when the frame is a batch of a larger file; by default the
    frame's own repeats."""
    contract = {c: v for c, v in TRANSACTION_COLUMNS.items() if labelled or v[0] != "label"}
    require_columns(frame.columns, contract)
    frame = frame.reset_index(drop=True)
    typed = pd.DataFrame({c: _parse_column(frame, c, kind) for c, (kind, _) in contract.items()})

    checks: list[tuple[str, pd.Series]] = []
    for column, (kind, _) in contract.items():
        absent = typed[column].isna()  # for text, a blank value too
        if kind == "string":
            checks.append((f"{column} is missing", absent))
        else:
            unparsed = absent & frame[column].notna()
            checks.append((f"{column} is missing", absent & ~unparsed))
            checks.append((f"{column} does not parse", unparsed))
    amount = typed["amount"]
    checks += [
        ("amount is not finite", amount.notna() & ~np.isfinite(amount.fillna(0.0))),
        ("amount is negative or zero", amount <= 0),
        ("timestamp is before 1990", typed["timestamp"] < EARLIEST_TIMESTAMP),
        ("merchant_category is not in the contract", typed["merchant_category"].notna() & ~typed["merchant_category"].isin(MERCHANT_CATEGORIES)),
        ("channel is not in the contract", typed["channel"].notna() & ~typed["channel"].isin(CHANNELS)),
    ]
    if labelled:
        checks.append(("is_fraud is not 0 or 1", typed["is_fraud"].notna() & ~typed["is_fraud"].isin([0.0, 1.0])))
    repeated = typed["transaction_id"].duplicated(keep="first") if duplicate is None else pd.Series(duplicate, index=frame.index)
    checks.append(("duplicate transaction_id", typed["transaction_id"].notna() & repeated))
    if known_customers is not None:
        checks.append(("unknown customer_id", typed["customer_id"].notna() & ~typed["customer_id"].isin(known_customers)))

    reasons = pd.Series("", index=frame.index, dtype=object)
    counts: dict[str, int] = {}
    for reason, failed in checks:
        failed = failed.fillna(False).astype(bool)
        if failed.any():
            counts[reason] = int(failed.sum())
            reasons[failed] = reasons[failed] + "; " + reason
    bad = reasons != ""

    rejected = frame[bad].copy()
    rejected["reject_reason"] = reasons[bad].str.removeprefix("; ")
    accepted = typed[~bad].copy()
    if labelled:
        accepted["is_fraud"] = accepted["is_fraud"].astype(np.int8)
    accepted = accepted.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)
    return ContractResult(accepted, rejected.reset_index(drop=True), counts)


def load_transactions(path: Path, known_customers: set[str] | None = None) -> ContractResult:
    """Read and validate a transactions file (Parquet or CSV)."""
    return validate(read_table(path), known_customers)


def write_rejects(result: ContractResult, path: Path) -> None:
    """Keep the rejected rows, as read, with their reasons (CSV, for people to read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    result.rejected.to_csv(path, index=False)


def duplicate_rows(path: Path, rows: int = BATCH_ROWS, progress: bool = False) -> np.ndarray:
    """Row numbers (0-based, in file order, sorted) of the rows whose transaction_id already came
    earlier in the file; missing ids are never duplicates. The ids are held as 64-bit hashes (0.8 GB
    for 100 M rows); only rows whose hash is shared are read again and compared by value."""
    require_columns(columns_of(path))  # the first pass over a file: refuse one without the contract's columns
    hashes, present = [], []
    bar = tqdm(total=rows_in(path), desc="transaction ids", unit="row", unit_scale=True, disable=not progress)
    for batch in read_batches(path, rows, columns=["transaction_id"]):
        bar.update(len(batch))
        ids = batch["transaction_id"]
        present.append((ids.notna() & (ids.astype(str) != "")).to_numpy())
        hashes.append(pd.util.hash_array(ids.to_numpy(dtype=object)))
    bar.close()
    row = np.flatnonzero(np.concatenate(present))
    hashed = np.concatenate(hashes)[row]
    order = np.argsort(hashed, kind="stable")
    shared = np.flatnonzero(hashed[order][1:] == hashed[order][:-1])
    if not shared.size:
        return np.array([], dtype=np.int64)
    candidates = np.unique(row[order[np.r_[shared, shared + 1]]])
    values, start = [], 0
    for batch in read_batches(path, rows, columns=["transaction_id"]):
        wanted = candidates[(candidates >= start) & (candidates < start + len(batch))]
        values.extend(batch["transaction_id"].to_numpy(dtype=object)[wanted - start])
        start += len(batch)
    return candidates[pd.Series(values, dtype=object).duplicated(keep="first").to_numpy()]


@dataclass
class CheckedFile:
    """What checking a file saw: counts, reasons and the accepted rows' time span."""

    accepted_rows: int = 0
    rejected_rows: int = 0
    reason_counts: dict[str, int] = field(default_factory=dict)
    first: pd.Timestamp | None = None  # the earliest accepted timestamp
    last: pd.Timestamp | None = None

    @classmethod
    def of(cls, result: ContractResult) -> CheckedFile:
        stamps = result.accepted["timestamp"]
        return cls(len(result.accepted), len(result.rejected), dict(result.reason_counts),
                   stamps.min() if len(stamps) else None, stamps.max() if len(stamps) else None)

    def merge(self, other: CheckedFile) -> None:
        """Add what another part of the file saw (in any order)."""
        self.accepted_rows += other.accepted_rows
        self.rejected_rows += other.rejected_rows
        for reason, count in other.reason_counts.items():
            self.reason_counts[reason] = self.reason_counts.get(reason, 0) + count
        if other.first is not None:
            self.first = min(other.first, self.first) if self.first is not None else other.first
            self.last = max(other.last, self.last) if self.last is not None else other.last

    def summary(self) -> str:
        lines = [f"accepted {self.accepted_rows:,} rows, rejected {self.rejected_rows:,}"]
        lines += [f"  {count:,} × {reason}" for reason, count in sorted(self.reason_counts.items())]
        return "\n".join(lines)


def check_batch(batch: pd.DataFrame, start: int, duplicates: np.ndarray,
                known_customers: set[str] | None = None) -> ContractResult:
    """The rows of a file from row number `start` on, checked as the whole file's check would check
    them: `duplicates` are the file's repeated rows (duplicate_rows), wherever they fall."""
    repeated = np.zeros(len(batch), dtype=bool)
    repeated[duplicates[(duplicates >= start) & (duplicates < start + len(batch))] - start] = True
    return validate(batch, known_customers, duplicate=repeated)
