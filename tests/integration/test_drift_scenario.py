"""The generator's drift scenario, end to end: two months more of the same customers, once as
they would have been and once with the scenario's shift (amounts 40% higher, half of the
point-of-sale payments moved to mobile). Each version's features go into a copy of the online
store, are scored through a real `bentoml serve`, land in its inference log, and the drift report
compares the two windows: it must flag every feature the scenario moves by a quarter of a standard
deviation or more, next to nothing it leaves alone, and fire the alert. The drift CronJob's report
on those windows then decides whether the retraining CronJob starts a cycle."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.feature_sets import CHURN_FEATURES
from core.registry import LOCK_TAG, mlflow_client, read_plan
from loadtests.servers import ROOT, stop
from monitoring.cli import app as monitoring_cli
from monitoring.drift import ALERT_SHARE, SCORE, read_log, run_report
from rollout.cli import EXIT_REFUSED
from rollout.retrain import read_record
from tests.integration.conftest import start_server
from training import store
from training.features import compute_features
from training.generate import DRIFT_FEATURES_MOVED, Period, add_months, generate_chunk
from training.partitions import read_transactions

pytestmark = [pytest.mark.integration, pytest.mark.slow]
VIEWS = ("customer_activity", "customer_spend_mix", "customer_risk_profile")


def later_features(settings, drifted: bool) -> pd.DataFrame:
    """Features at the end of two further months, computed from the history and those months."""
    base = Period(settings.start_date, add_months(settings.start_date, settings.months))
    later = Period(base.end, add_months(base.end, 2))
    _, tx = generate_chunk(settings.seed, 0, settings.n_customers, base, later, drifted)
    history = read_transactions(settings.transactions_by_customer_dir)
    return compute_features(pd.concat([history, tx], ignore_index=True), [pd.Timestamp(later.end, tz="UTC")])


def write_online(feature_store, features: pd.DataFrame) -> None:
    for view in VIEWS:
        names = [f.name for f in feature_store.get_feature_view(view).features]
        feature_store.write_to_online_store(view, features[["customer_id", "event_timestamp", *names]])


def score_all(url: str, customers: list[str]) -> set[str]:
    """churn-batch in calls of 1,000; returns the request ids (one per call)."""
    ids = set()
    for start in range(0, len(customers), 1000):
        response = httpx.post(f"{url}/api/v1/inference/churn-batch", json={"customer_ids": customers[start:start + 1000]},
                              timeout=120)
        assert response.status_code == 200, response.text
        ids.add(response.headers["X-Request-ID"])
    return ids


@pytest.fixture(scope="module")
def scenario(settings, built, served_models, tmp_path_factory):
    """A copy of the session's data, and the inference log's two windows: as it was, and drifted."""
    copy = settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("drift") / "data"})
    shutil.copytree(settings.data_dir, copy.data_dir, ignore=shutil.ignore_patterns("inference_log", "logs", "reports"))
    feature_store = store.open_store(copy)
    as_it_was, drifted = later_features(settings, drifted=False), later_features(settings, drifted=True)
    customers = sorted(set(as_it_was["customer_id"]) & set(drifted["customer_id"]))

    process, url = start_server(copy, tmp_path_factory.mktemp("serve"), ONLINE_STORE="sqlite",
                                SERVING_REGISTRY_POLL_S="0", SERVING_INFERENCE_LOG_FLUSH_S="3600")
    try:
        write_online(feature_store, as_it_was)
        reference_ids = score_all(url, customers)
        write_online(feature_store, drifted)
        current_ids = score_all(url, customers)
    finally:
        stop(process)  # writes the inference log

    logged = read_log(copy.data_dir / "inference_log" / "churn")
    reference = logged[logged["request_id"].isin(reference_ids)]
    current = logged[logged["request_id"].isin(current_ids)]
    assert len(reference) == len(current) == len(customers)
    return copy, reference, current


def test_the_drift_report_finds_what_the_scenario_moved(scenario):
    _, reference, current = scenario
    summary = run_report(reference, current, CHURN_FEATURES).summary
    flagged = set(summary["drifted_features"])
    expected = set(DRIFT_FEATURES_MOVED) & set(CHURN_FEATURES)
    # The decisions are built to find a shift of a quarter of a standard deviation (docs/guides/drift-reports.md);
    # some of what the scenario moves moves less (a year-long log average: ~0.12 sd).
    shift = {f: abs(current[f].mean() - reference[f].mean()) / reference[f].std() for f in expected}
    large = {f for f in expected if shift[f] >= 0.25}
    precision = len(flagged & expected) / len(flagged) if flagged else 0.0
    print(f"drift scenario: flagged {sorted(flagged)}; moved by 0.25 sd or more {sorted(large)}; "
          f"missed {({f: round(shift[f], 3) for f in expected - flagged})}; precision {precision:.2f}")
    assert large and large <= flagged, (sorted(flagged), sorted(large))
    assert precision >= 0.9, (sorted(flagged), sorted(expected))
    assert summary["drift_share"] > ALERT_SHARE  # the alert fires


def drift_report(copy, reference: Path, current: Path) -> None:
    """`python -m monitoring drift-report` as the drift CronJob runs it, on files of two windows:
    the report lands in the copy's DATA_DIR/reports/drift, where the retraining CronJob reads it."""
    env = {"DATA_DIR": str(copy.data_dir), "MLFLOW_TRACKING_URI": copy.tracking_uri}
    args = ["drift-report", "--model", "churn", "--reference", str(reference), "--current", str(current), "--no-workspace"]
    result = CliRunner().invoke(monitoring_cli, args, env=env)
    assert result.exit_code == 0, result.output


# The scenario drifts about a fifth of churn's features: over the alert's line (ALERT_SHARE), under
# the default one of retraining (RETRAIN_DRIFT_ABOVE, 0.3); a deployment sets the line it wants.
RETRAIN_LINE = 0.15


def retrain_if_drifted(copy) -> tuple[dict, subprocess.CompletedProcess]:
    """The retraining CronJob's command (a dry run, a short search): its decision, and how it ended."""
    done = subprocess.run([sys.executable, "-m", "rollout", "retrain-if-drifted", "churn", "--dry-run"], cwd=ROOT, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "DATA_DIR": str(copy.data_dir), "MLFLOW_TRACKING_URI": copy.tracking_uri,
                               "RETRAIN_BUDGET_MIN": "0.2", "RETRAIN_MAX_TRIALS": "1",
                               "RETRAIN_DRIFT_ABOVE": str(RETRAIN_LINE), "PYTHONOPTIMIZE": "1"})  # -O: as the jobs image runs it
    assert done.returncode in (0, EXIT_REFUSED), done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[0]), done


def test_a_report_over_the_line_starts_a_retraining_cycle_and_one_under_it_does_not(scenario, tmp_path):
    copy, reference, current = scenario
    client = mlflow_client(copy.tracking_uri)
    windows = {}
    for name, window in (("reference", reference), ("current", current)):
        windows[name] = tmp_path / f"{name}.parquet"
        window[[*CHURN_FEATURES, SCORE]].to_parquet(windows[name])
    line = RETRAIN_LINE
    versions = {v.version for v in client.search_model_versions("name='churn'")}
    champion = read_plan("churn", copy.tracking_uri).champion
    record = read_record(client, "churn")

    drift_report(copy, windows["reference"], windows["reference"])  # the window the model was built on: no drift
    decision, done = retrain_if_drifted(copy)
    assert done.returncode == 0 and decision["retrain"] is False and decision["drift_share"] <= line, decision
    assert read_record(client, "churn") == record  # no cycle ran
    assert {v.version for v in client.search_model_versions("name='churn'")} == versions

    drift_report(copy, windows["reference"], windows["current"])  # the scenario's shift
    decision, done = retrain_if_drifted(copy)
    assert decision["retrain"] is True and decision["drift_share"] > line, decision
    cycle = read_record(client, "churn")
    # the cycle ran to its end: the guard's verdict on a candidate of the same data may go either way
    assert cycle["trigger"] == "drift" and (done.returncode, cycle["outcome"]) in ((0, "dry_run"), (EXIT_REFUSED, "refused")), \
        done.stdout + done.stderr
    assert cycle["candidate"] not in versions  # a new version, trained and registered
    plan = read_plan("churn", copy.tracking_uri)
    assert (plan.champion, plan.challenger) == (champion, None)  # a dry run moves no alias
    assert client.get_model_version("churn", cycle["candidate"]).aliases == []
    assert LOCK_TAG not in client.get_registered_model("churn").tags
