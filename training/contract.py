"""Check a transactions file against the data contract and split it into accepted and rejected rows.

A file that lacks a column, or whose column has the wrong type, is refused at once with a
:class:`ContractError` naming the column. Rows that break the contract are kept, with the reason,
in a rejects file, and counted; they are never dropped silently.

    result = load_transactions(Path("my_transactions.csv"), known_customers=ids)
    result.accepted        # clean rows in canonical types
    result.rejected        # the bad rows, as read, with a `reject_reason` column
    result.reason_counts   # {"amount is negative or zero": 3, ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.schema import CHANNELS, MERCHANT_CATEGORIES, TRANSACTION_COLUMNS

# A text column in which fewer than this share of values parse is of the wrong type, not dirty.
MIN_PARSEABLE_SHARE = 0.5
EARLIEST_TIMESTAMP = pd.Timestamp("1990-01-01", tz="UTC")


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


def read_table(path: Path) -> pd.DataFrame:
    """Read Parquet or CSV by extension; CSV is read as text and typed by :func:`validate`."""
    if not path.exists():
        raise ContractError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt"):
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    raise ContractError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")


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


def validate(frame: pd.DataFrame, known_customers: set[str] | None = None, labelled: bool = True) -> ContractResult:
    """Split a transactions frame into accepted rows (canonical types) and rejected rows with reasons.
    `labelled=False`: live events, which carry no `is_fraud` yet."""
    contract = {c: v for c, v in TRANSACTION_COLUMNS.items() if labelled or v[0] != "label"}
    missing = [c for c in contract if c not in frame.columns]
    if missing:
        raise ContractError(f"missing column(s): {', '.join(missing)}; the contract needs {', '.join(contract)}")
    frame = frame.reset_index(drop=True)
    typed = pd.DataFrame({c: _parse_column(frame, c, kind) for c, (kind, _) in contract.items()})

    checks: list[tuple[str, pd.Series]] = []
    for column in contract:
        unparsed = typed[column].isna() & frame[column].notna()
        checks.append((f"{column} is missing", typed[column].isna() & ~unparsed))
        if contract[column][0] != "string":
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
    checks.append(("duplicate transaction_id", typed["transaction_id"].notna() & typed["transaction_id"].duplicated(keep="first")))
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
