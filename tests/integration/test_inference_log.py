"""The inference log of a real `bentoml serve`: a SIGTERM under load loses no answered request's record."""

import signal

import pandas as pd
import pytest

from core.feature_sets import CHURN_FEATURES
from tests.integration.conftest import LoadClient, latest_rows, start_server, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_sigterm_under_load_loses_no_answered_request(settings, served_models, table, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    log_dir = folder / "inference_log"
    # written only at shutdown: the log's timer is longer than the test
    process, url = start_server(settings, folder, ONLINE_STORE="sqlite", SERVING_INFERENCE_LOG_DIR=str(log_dir),
                                SERVING_INFERENCE_LOG_FLUSH_S="3600", SERVING_REGISTRY_POLL_S="0")
    customers = latest_rows(table, 500).index.tolist()
    with LoadClient(url, customers, threads=6) as load:
        wait_for(lambda: len(load.answers) >= 600, "600 answers")
        assert not list(log_dir.rglob("*.parquet"))
        process.send_signal(signal.SIGTERM)  # with requests in flight
        assert process.wait(timeout=90) == 0
    answered = {a[4]: a for a in load.answers}
    logged = pd.read_parquet(log_dir / "churn").set_index("request_id")
    missing = set(answered) - set(logged.index)
    assert len(answered) >= 600 and not missing, f"{len(missing)} answered requests have no record"
    row = logged.loc[next(iter(answered))]
    assert row["model"] == "churn" and row["role"] == "champion" and row["version"] == answered[row.name][2]
    assert set(CHURN_FEATURES) <= set(logged.columns) and logged["score"].between(0, 1).all()
