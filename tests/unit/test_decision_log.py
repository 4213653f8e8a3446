"""The inference log's chain and journal (core/decision_log.py): a log as the service writes it
checks clean; each kind of tampering is found and named; a killed writer's journal is written as
files of the same chain, once, and a live writer's is left alone."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bentos.inference_log import InferenceLog
from core.decision_log import JOURNAL, log_files, recover
from monitoring.integrity import check_chain
from scoring.base import FEATURES_KEY

FEATURES = ["days_since_last_txn", "txn_count_30d"]
OTHER = ["days_since_last_txn", "spend_30d"]  # what a second version reads


def append(log: InferenceLog, first: int, rows: int, version: str = "1", features=FEATURES) -> None:
    requests = [{"customer_id": f"C{n}", "request_id": f"r{n}", "client_id": "app" if n % 2 else ""} for n in range(first, first + rows)]
    results = [{"customer_id": r["customer_id"], "churn_probability": n / 100, "risk_level": "low",
                FEATURES_KEY: np.array([float(n), np.nan if n % 3 == 0 else 2.5])}
               for n, r in zip(range(first, first + rows), requests)]
    log.append(version, "champion" if version == "1" else "challenger", features, requests, results)


@pytest.fixture
def written(tmp_path):
    """Three files of one writer: 30 rows, the third file mixing two versions' features."""
    log = InferenceLog(tmp_path, "churn", flush_s=60)
    append(log, 0, 10)
    log.flush()
    append(log, 10, 10)
    log.flush()
    append(log, 20, 5)
    append(log, 25, 5, "2", OTHER)
    log.flush()
    log.close()
    return tmp_path / "churn", log


def files_of(directory):
    return [f.path for f in log_files(directory)]


def rewrite(path, change) -> None:
    """Write the file again with `change(table) -> table`, its footer kept."""
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def kinds(directory) -> list[tuple[str, str]]:
    return [(f.kind, f.where.rsplit("request ", 1)[-1]) for f in check_chain(directory, "churn").findings]


def test_a_log_as_written_checks_clean_and_its_head_is_the_writers(written):
    directory, log = written
    report = check_chain(directory, "churn")
    assert report.findings == [] and report.writers == 1 and report.rows == 30
    assert report.heads == {log.writer: (30, log._head)}
    assert not any((directory / JOURNAL).iterdir())


def edited(t, column: str, request_id: str, value):
    """The table with `column` set to `value` in the row of `request_id`."""
    values = [value if r == request_id else v for r, v in zip(t["request_id"].to_pylist(), t[column].to_pylist())]
    return t.set_column(t.schema.get_field_index(column), column, pa.array(values))


@pytest.mark.parametrize(("file", "column", "request_id", "value"), [
    (1, "score", "r13", 0.01),  # a decision's score
    (2, "spend_30d", "r27", 9.0),  # a feature only the second version reads
    (0, "decision", "r3", "high"),
])
def test_an_edited_value_is_named(written, file, column, request_id, value):
    directory, _ = written
    rewrite(files_of(directory)[file], lambda t: edited(t, column, request_id, value))
    assert kinds(directory) == [("edited", request_id)]


def test_a_removed_row_and_a_removed_file_are_named(written):
    directory, _ = written
    first, second, _ = files_of(directory)
    rewrite(first, lambda t: t.filter(pc.not_equal(t["request_id"], "r4")))
    second.unlink()
    found = check_chain(directory, "churn").findings
    assert [(f.kind, f.where.rsplit("request ", 1)[-1]) for f in found[1:]] == [("removed", "r5"), ("removed", "r20")]
    assert found[0].kind == "file missing" and "file 000002" in found[0].where
    assert "seq 5 missing" in found[1].detail and "seq 11 to 20 missing" in found[2].detail


def test_reordered_rows_are_named(written):
    directory, _ = written
    second = files_of(directory)[1]
    rewrite(second, lambda t: t.take([0, 1, 3, 2, *range(4, len(t))]))
    assert kinds(directory) == [("reordered", "r12")]


def test_an_inserted_row_is_named(written):
    directory, _ = written
    second = files_of(directory)[1]

    def forged(t):  # a copy of r14 under another request id, where r14 was
        rows = t.to_pylist()
        fake = dict(rows[4], request_id="forged", score=0.99)
        return pa.Table.from_pylist(rows[:5] + [fake] + rows[5:], schema=t.schema)

    rewrite(second, forged)
    assert kinds(directory) == [("inserted", "forged")]


def test_a_killed_writers_journal_becomes_files_of_its_chain_once(tmp_path):
    log = InferenceLog(tmp_path, "churn", flush_s=60)
    append(log, 0, 10)
    log.flush()
    append(log, 10, 10)
    append(log, 20, 5, "2", OTHER)
    # killed: the last rows were never written as a file; its journal and its lock are what is left
    os.close(log._journal_fd)
    [segment] = (tmp_path / "churn" / JOURNAL).iterdir()
    with open(segment, "ab") as f:
        f.write(b"FJ01\x10\x00\x00\x00")  # a record torn by the kill: its batch was never answered
    written = recover(tmp_path / "churn", "churn")
    assert [rows for _, rows in written] == [15] and not segment.exists()
    assert recover(tmp_path / "churn", "churn") == []
    report = check_chain(tmp_path / "churn", "churn")
    assert report.findings == [] and report.rows == 25 and report.heads[log.writer][0] == 25  # chained on from the file


def test_a_journal_whose_rows_are_already_in_a_file_is_not_written_twice(tmp_path):
    log = InferenceLog(tmp_path, "churn", flush_s=60)
    append(log, 0, 10)
    segment = tmp_path / "churn" / JOURNAL / f"{log.writer}-000001.wal"
    kept = segment.read_bytes()
    log.flush()  # the file is written; then the process dies before its journal is removed
    segment.write_bytes(kept)
    assert recover(tmp_path / "churn", "churn") == [] and not segment.exists()
    assert check_chain(tmp_path / "churn", "churn").rows == 10


def test_a_live_writers_journal_is_left_alone(tmp_path):
    log = InferenceLog(tmp_path, "churn", flush_s=60)
    append(log, 0, 10)
    assert recover(tmp_path / "churn", "churn") == []
    assert log.flush() == 10 and check_chain(tmp_path / "churn", "churn").rows == 10
    log.close()


def test_days_the_retention_removed_are_not_taken_for_tampering(written):
    import shutil

    from core.decision_log import note_pruned

    directory, _ = written
    first = files_of(directory)[0]
    old_day = directory / "date=2020-01-01"
    old_day.mkdir()
    first.rename(old_day / first.name)
    note_pruned(old_day)  # what prune-log does before it removes a day
    shutil.rmtree(old_day)
    assert check_chain(directory, "churn").findings == []
    (directory / "_pruned.jsonl").unlink()  # the same files gone without the note: removed
    assert [f.kind for f in check_chain(directory, "churn").findings] == ["removed"]


def test_a_log_with_its_journal_off_is_written_unchained_and_verify_says_so(tmp_path):
    log = InferenceLog(tmp_path, "churn", flush_s=60, journal="off")
    append(log, 0, 10)
    assert not (tmp_path / "churn" / JOURNAL).exists()
    assert log.flush() == 10
    log.close()
    [file] = log_files(tmp_path / "churn")
    assert file.writer is None and "chain" not in pq.read_schema(file.path).names
    assert [f.kind for f in check_chain(tmp_path / "churn", "churn").findings] == ["unchained"]


def append_fraud(log: InferenceLog, first: int, rows: int) -> None:
    """Fraud rows; every third met a rule (the outcome it raised is the logged decision)."""
    requests = [{"customer_id": f"C{n}", "request_id": f"f{n}", "client_id": "app"} for n in range(first, first + rows)]
    hits = [[{"rule": "large-amount", "code": "RUL04", "outcome": "review", "sentence": "Large"}] if n % 3 == 0 else []
            for n in range(first, first + rows)]
    results = [{"customer_id": r["customer_id"], "fraud_probability": n / 1000, "outcome": "review" if hit else "accept",
                "rules": hit, FEATURES_KEY: np.array([float(n), 1.0])}
               for n, r, hit in zip(range(first, first + rows), requests, hits)]
    log.append("1", "champion", FEATURES, requests, results)


def test_the_rules_a_fraud_row_met_are_logged_under_the_chain_and_survive_a_kill(tmp_path):
    log = InferenceLog(tmp_path, "fraud", flush_s=60)
    append_fraud(log, 0, 9)
    log.flush()
    append_fraud(log, 9, 6)
    os.close(log._journal_fd)  # killed before the second batch was written as a file
    assert [rows for _, rows in recover(tmp_path / "fraud", "fraud")] == [6]
    directory = tmp_path / "fraud"
    table = pa.concat_tables(pq.read_table(path) for path in files_of(directory))
    assert table["rules"].to_pylist() == ["large-amount:review" if n % 3 == 0 else "" for n in range(15)]
    assert check_chain(directory, "fraud").findings == []
    rewrite(files_of(directory)[0], lambda t: edited(t, "rules", "f3", ""))  # a hit removed
    assert [(f.kind, f.where.rsplit("request ", 1)[-1]) for f in check_chain(directory, "fraud").findings] == [("edited", "f3")]
