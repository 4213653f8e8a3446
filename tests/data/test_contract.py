"""The data contract of a transactions file: a file that cannot be read as the contract says stops
the run with a message naming the column; a row that breaks it is kept, as read, with its reason."""

import subprocess
import sys

import pandas as pd
import pytest

from core.contract import ContractError, duplicate_rows, load_transactions, validate, write_rejects
from core.schema import TRANSACTION_COLUMNS
from tests.conftest import make_tx
from training.partitions import check_into_partitions, read_transactions

GOOD = ("A", "2026-03-02 12:00", 50.0, "dining", "online", "GB", "dA")


def good_rows(n: int = 3) -> pd.DataFrame:
    return make_tx([GOOD] * n)


def test_a_file_that_follows_the_contract_is_accepted_whole():
    result = validate(good_rows())
    assert len(result.accepted) == 3 and result.rejected.empty and result.reason_counts == {}
    assert list(result.accepted.columns) == list(TRANSACTION_COLUMNS)


@pytest.mark.parametrize("column", ["channel", "amount", "timestamp"])
def test_a_missing_column_is_named(column):
    with pytest.raises(ContractError, match=f"missing column\\(s\\): {column}"):
        validate(good_rows().drop(columns=[column]))


@pytest.mark.parametrize(("column", "values", "expected"), [
    ("amount", ["twelve", "ten", "five"], "expected a number"),
    ("timestamp", ["soon", "later", "never"], "expected a timestamp"),
    ("timestamp", [1, 2, 3], "expected a timestamp"),
])
def test_a_column_of_the_wrong_type_is_named(column, values, expected):
    frame = good_rows().astype({column: object})
    frame[column] = values
    with pytest.raises(ContractError, match=f"column '{column}': {expected}"):
        validate(frame)


REASONS = {  # a bad row for each reason: (column, value), applied to an otherwise good row
    "amount is negative or zero": ("amount", -5.0),
    "amount is not finite": ("amount", float("inf")),
    "amount is missing": ("amount", None),
    "timestamp is before 1990": ("timestamp", pd.Timestamp("1980-01-01", tz="UTC")),
    "merchant_category is not in the contract": ("merchant_category", "casino"),
    "channel is not in the contract": ("channel", "pigeon"),
    "is_fraud is not 0 or 1": ("is_fraud", 3),
    "customer_id is missing": ("customer_id", None),
}


def test_every_bad_row_is_kept_with_its_reason_and_counted():
    frame = good_rows(len(REASONS) + 2).astype({"amount": float, "is_fraud": "int64", "customer_id": object})
    for i, (column, value) in enumerate(REASONS.values()):
        frame.loc[i, column] = value
    frame.loc[len(REASONS), "transaction_id"] = frame.loc[0, "transaction_id"]  # a duplicate of the first
    result = validate(frame)
    expected = {**{reason: 1 for reason in REASONS}, "duplicate transaction_id": 1}
    assert result.reason_counts == expected
    assert len(result.accepted) == 1 and len(result.rejected) == len(expected)
    # in the file's order: one row per reason, then the duplicate
    assert result.rejected["reject_reason"].tolist() == [*REASONS, "duplicate transaction_id"]
    # rows are kept as read: the bad amount is still there for a person to see
    assert -5.0 in result.rejected["amount"].tolist()



@pytest.mark.parametrize("column", [c for c, (kind, _) in TRANSACTION_COLUMNS.items() if kind == "string"])
def test_a_blank_text_value_in_a_parquet_file_is_missing(column, tmp_path):
    """A CSV reads a blank cell as missing; Parquet keeps the empty string, which says no more."""
    frame = good_rows(3)
    frame.loc[1, column] = ""
    frame.to_parquet(tmp_path / "t.parquet")
    result = load_transactions(tmp_path / "t.parquet")
    assert result.reason_counts == {f"{column} is missing": 1}
    assert len(result.accepted) == 2 and result.accepted[column].notna().all()

def test_transactions_of_unknown_customers_are_rejected_when_the_customers_are_known():
    result = validate(make_tx([GOOD, ("B", *GOOD[1:])]), known_customers={"A"})
    assert result.reason_counts == {"unknown customer_id": 1} and result.accepted["customer_id"].tolist() == ["A"]


def test_a_csv_is_typed_by_the_contract_and_its_rejects_are_written_with_reasons(tmp_path):
    frame = good_rows(2)
    frame.loc[1, "channel"] = "pigeon"
    path = tmp_path / "transactions.csv"
    frame.to_csv(path, index=False)
    result = load_transactions(path)
    assert len(result.accepted) == 1 and result.accepted["amount"].dtype == float
    write_rejects(result, tmp_path / "rejects.csv")
    rejects = pd.read_csv(tmp_path / "rejects.csv")
    assert rejects["reject_reason"].tolist() == ["channel is not in the contract"]


@pytest.mark.parametrize("column, suffix", [("channel", ".csv"), ("transaction_id", ".csv"), ("transaction_id", ".parquet")])
def test_the_cli_names_the_missing_column_and_exits_2_without_a_traceback(column, suffix, tmp_path):
    bad = tmp_path / f"transactions{suffix}"
    frame = good_rows().drop(columns=[column])
    frame.to_csv(bad, index=False) if suffix == ".csv" else frame.to_parquet(bad)
    done = subprocess.run([sys.executable, "-m", "training", "features", "--data-dir", str(tmp_path / "data"),
                           "--transactions", str(bad)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"missing column(s): {column}" in done.stderr and "Traceback" not in done.stderr


def bad_and_duplicated_rows() -> pd.DataFrame:
    """A row for each reason, spread among good rows, and two ids that come again far down the file."""
    frame = good_rows(3 * len(REASONS) + 6).astype({"amount": float, "is_fraud": "int64", "customer_id": object})
    frame["customer_id"] = [f"C{i % 5}" for i in range(len(frame))]
    frame["timestamp"] = pd.Timestamp("2026-03-02", tz="UTC") + pd.to_timedelta(frame.index % 7, unit="D")
    for i, (column, value) in enumerate(REASONS.values()):
        frame.loc[3 * i + 1, column] = value
    frame.loc[len(frame) - 1, "transaction_id"] = frame.loc[0, "transaction_id"]
    frame.loc[len(frame) - 2, "transaction_id"] = frame.loc[4, "transaction_id"]
    frame.loc[[5, 6], "transaction_id"] = None  # missing twice: a missing id, not a duplicate
    return frame


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_file_checked_a_few_rows_at_a_time_gives_what_one_frame_gives(suffix, tmp_path):
    frame = bad_and_duplicated_rows()
    path = tmp_path / f"transactions{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    whole = load_transactions(path)
    checked, _ = check_into_partitions(path, tmp_path / "parts", 3, tmp_path / "rejects.csv", rows=4, progress=False)
    assert len(list(tmp_path.glob("parts/part-*/batch-*.parquet"))) >= -(-len(frame) // 4)
    pd.testing.assert_frame_equal(read_transactions(tmp_path / "parts"), whole.accepted, check_exact=True)
    assert checked.reason_counts == whole.reason_counts and checked.reason_counts["duplicate transaction_id"] == 2
    assert "transaction_id is missing" in checked.reason_counts
    assert (checked.accepted_rows, checked.rejected_rows) == (len(whole.accepted), len(whole.rejected))
    assert (checked.first, checked.last) == (whole.accepted["timestamp"].min(), whole.accepted["timestamp"].max())
    write_rejects(whole, tmp_path / "rejects_whole.csv")
    assert (tmp_path / "rejects.csv").read_text() == (tmp_path / "rejects_whole.csv").read_text()


def test_only_the_later_rows_of_a_repeated_id_are_duplicates_whichever_batch_they_fall_in(tmp_path):
    frame = good_rows(10)
    frame["transaction_id"] = ["t0", "t1", "t2", "t0", "", "t3", "t1", "", "t0", "t9"]
    frame.to_parquet(tmp_path / "t.parquet")
    assert duplicate_rows(tmp_path / "t.parquet", rows=3).tolist() == [3, 6, 8]
