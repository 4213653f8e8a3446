"""The inference log when its folder cannot be written: serving goes on, memory stays bounded,
what is dropped is counted, and what is held is written once the folder is back."""

import numpy as np
import pandas as pd
import pytest

from bentos.inference_log import InferenceLog
from scoring.base import FEATURES_KEY

FEATURES = ["days_since_last_txn", "txn_count_30d"]


def append(log: InferenceLog, first: int, rows: int) -> None:
    """Rows `first` .. `first + rows - 1`, as one scored batch (request ids r<n>)."""
    requests = [{"customer_id": f"C{n}", "request_id": f"r{n}"} for n in range(first, first + rows)]
    results = [{"customer_id": r["customer_id"], "churn_probability": 0.1, "risk_level": "low",
                FEATURES_KEY: np.array([1.0, 2.0])} for r in requests]
    log.append("1", "champion", FEATURES, requests, results)


def test_an_unwritable_folder_keeps_the_newest_rows_up_to_the_bound_and_writes_them_when_it_is_back(tmp_path):
    blocked = tmp_path / "log"
    blocked.write_text("a file where the log's folder should be")  # root cannot be stopped by permissions
    dropped = []
    log = InferenceLog(blocked, "churn", flush_s=60, max_rows=250, on_dropped=dropped.append).start()
    for batch in range(10):
        append(log, 100 * batch, 100)
        with pytest.raises(OSError):
            log.flush()
    assert log.backlog == 200 and log.dropped_rows == 800 and sum(dropped) == 800
    blocked.unlink()
    assert log.flush() == 200
    logged = pd.read_parquet(blocked / "churn")
    assert sorted(logged["request_id"]) == sorted(f"r{n}" for n in range(800, 1000))  # the newest were kept
    assert log.backlog == 0
    log.close()


def test_a_batch_larger_than_the_bound_is_kept_whole(tmp_path):
    blocked = tmp_path / "log"
    blocked.write_text("")
    log = InferenceLog(blocked, "churn", flush_s=60, max_rows=10).start()
    append(log, 0, 5)
    append(log, 5, 40)
    assert log.backlog == 40 and log.dropped_rows == 5
    log.close()


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def disk_full(table, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    log = InferenceLog(tmp_path / "log", "churn", flush_s=60).start()
    append(log, 0, 10)
    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        log.flush()
    files = [p.relative_to(tmp_path / "log" / "churn") for p in (tmp_path / "log").rglob("*") if p.is_file()]
    assert [p.parent.name for p in files] == ["_journal"]  # the rows wait in the journal, and nothing else was left
    monkeypatch.undo()
    assert log.flush() == 10
    assert not any((tmp_path / "log" / "churn" / "_journal").iterdir())  # written: the journal let go of them
    log.close()


def test_closing_with_an_unwritable_folder_says_what_is_lost_instead_of_raising(tmp_path, caplog):
    blocked = tmp_path / "log"
    blocked.write_text("")
    log = InferenceLog(blocked, "churn", flush_s=60).start()
    append(log, 0, 7)
    log.close(timeout_s=1)
    assert "could not write its last 7 rows" in caplog.text


def test_each_prediction_names_the_client_that_asked_and_its_scope(tmp_path):
    log = InferenceLog(tmp_path, "churn", flush_s=60).start()
    requests = [{"customer_id": "C1", "request_id": "r1", "client_id": "retention-app"},
                {"customer_id": "C2", "request_id": "r2", "client_id": ""}]  # AUTH_MODE=off: nobody authenticated
    results = [{"customer_id": r["customer_id"], "churn_probability": 0.1, "risk_level": "low",
                FEATURES_KEY: np.array([1.0, 2.0])} for r in requests]
    log.append("1", "champion", FEATURES, requests, results)
    log.close()
    logged = pd.read_parquet(tmp_path / "churn").set_index("request_id")
    assert logged.loc["r1", ["client_id", "scope"]].tolist() == ["retention-app", "inference"]
    assert logged.loc["r2", ["client_id", "scope"]].tolist() == ["", ""]


def test_versions_reading_different_features_share_one_file_with_the_others_columns_empty(tmp_path):
    log = InferenceLog(tmp_path, "churn", flush_s=60).start()
    append(log, 0, 2)
    requests = [{"customer_id": "C9", "request_id": "r9", "client_id": "retention-app"}]
    results = [{"customer_id": "C9", "churn_probability": 0.7, "risk_level": "high",
                FEATURES_KEY: np.array([np.nan, 5.0])}]
    log.append("2", "challenger", ["days_since_last_txn", "spend_30d"], requests, results)
    assert log.flush() == 3
    logged = pd.read_parquet(tmp_path / "churn").set_index("request_id")
    assert str(logged["time"].dtype) == "datetime64[ns, UTC]" and logged.loc["r9", "scope"] == "inference"
    assert logged.loc["r0", ["version", "role", "txn_count_30d"]].tolist() == ["1", "champion", 2.0]
    assert np.isnan(logged.loc["r0", "spend_30d"]) and np.isnan(logged.loc["r9", "days_since_last_txn"])
    assert logged.loc["r9", ["client_id", "spend_30d", "decision"]].tolist() == ["retention-app", 5.0, "high"]
    log.close()


def test_the_log_is_readable_by_the_services_group_only_and_marks_rows_whose_features_the_caller_set(tmp_path):
    import stat

    log = InferenceLog(tmp_path, "churn", flush_s=60).start()
    requests = [{"customer_id": "C1", "request_id": "r1", "features": {"days_since_last_txn": 90.0}},
                {"customer_id": "C2", "request_id": "r2", "features": None}, {"customer_id": "C3", "request_id": "r3"}]
    results = [{"customer_id": r["customer_id"], "churn_probability": 0.1, "risk_level": "low",
                FEATURES_KEY: np.array([1.0, 2.0])} for r in requests]
    log.append("1", "champion", FEATURES, requests, results)
    log.close()
    [file] = (tmp_path / "churn").rglob("*.parquet")
    assert stat.S_IMODE(file.stat().st_mode) == 0o640 and stat.S_IMODE(file.parent.stat().st_mode) == 0o750
    logged = pd.read_parquet(tmp_path / "churn").set_index("request_id")
    assert logged["overridden"].to_dict() == {"r1": True, "r2": False, "r3": False}
