"""Drift decisions on the session's own customers against the champion's served reference (the
study of loadtests/drift_alarms.py, small): windows with no drift must not fire the alert (churn,
fraud, segment), and shifts of a quarter of a standard deviation must be found with no other
feature flagged."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from core.movement import MAX_DISTANCE_THRESHOLD
from loadtests.drift_alarms import MEAN_SHIFTED, Shift, false_alarms, load_population, power
from monitoring.cli import app
from monitoring.drift import ALERT_SHARE, DISTANCE_THRESHOLD
from training import store
from training.generate import LATER_TRANSACTIONS
from training.pipeline import transactions_with_features

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def population(built, settings):
    return load_population(settings)


def test_the_served_reference_is_every_customer_of_the_latest_snapshot_scored(population, table):
    latest = table[table["event_timestamp"] == table["event_timestamp"].max()]
    assert len(population.reference) == len(latest)
    assert population.reference["score"].between(0, 1).all() and population.reference["score"].nunique() > 100


def test_each_version_stores_the_usual_movement_of_its_features(built, settings):
    """The season moves fraud's activity counts from month to month (docs/design/decisions/per-feature-drift-thresholds.md): their
    thresholds are raised; features that move little keep the default."""
    fraud = load_population(settings, "fraud")
    assert set(fraud.thresholds) == set(fraud.compared)
    assert fraud.thresholds["txn_count_30d"] > DISTANCE_THRESHOLD
    assert min(fraud.thresholds.values()) == DISTANCE_THRESHOLD and max(fraud.thresholds.values()) <= MAX_DISTANCE_THRESHOLD


def test_windows_with_no_drift_do_not_fire_the_alert(population):
    windows = false_alarms(population, windows=4, sizes=(1000,))
    flagged = [len(w["flagged"]) for w in windows]
    assert not any(w["alert"] for w in windows), windows
    assert sum(flagged) / len(flagged) <= 1, windows
    assert not any(w["prediction_drift"] for w in windows), windows


@pytest.mark.parametrize("family", ["fraud", "segment"])
def test_fraud_and_segment_windows_with_no_drift_do_not_fire_the_alert(built, settings, family):
    windows = false_alarms(load_population(settings, family), windows=2, sizes=(1000,))
    assert not any(w["alert"] or w["prediction_drift"] for w in windows), windows


def test_the_load_tests_fraud_traffic_does_not_fire_the_alert(built, settings):
    """The default demo's fraud window: what the load test sends (the generator's days after the
    data), with the features the service reads for it (the latest profile), against the served
    reference; as many rows as a few minutes of the locust mix log (7,909 in three minutes)."""
    population = load_population(settings, "fraud")
    later = pd.read_parquet(settings.raw_dir / LATER_TRANSACTIONS).sample(5000, random_state=0)
    window = transactions_with_features(store.open_store(settings), later)
    summary = population.report(window[population.features])
    assert summary["drift_share"] <= ALERT_SHARE, summary
    assert not summary["prediction_drift"]["drifted"], summary


def test_shifts_of_a_quarter_standard_deviation_and_more_are_found_and_nothing_else(population):
    shifts = [Shift("mean", tuple(MEAN_SHIFTED), 0.25), Shift("night share", ("night_share_90d",), 0.1),
              Shift("category share", ("share_travel_90d", "share_groceries_90d"), 0.1)]
    found = power(population, repeats=1, sizes=(1000,), shifts=shifts)
    assert all(row["found"] == row["injected"] and row["others"] == [] for row in found), found


def test_a_window_without_scores_is_scored_by_the_version_and_tenure_is_not_compared(population, settings, tmp_path):
    window = population.window(1000, seed=3)
    window["days_since_first_txn"] += 400  # a year and more later: every tenure grew
    window.to_parquet(tmp_path / "window.parquet")
    result = CliRunner().invoke(app, ["drift-report", "--model", "churn", "--current", str(tmp_path / "window.parquet"),
                                      "--reports-dir", str(tmp_path / "reports"), "--no-workspace"],
                                env={"DATA_DIR": str(settings.data_dir)})
    assert result.exit_code == 0, result.output
    [folder] = (tmp_path / "reports").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["reference"] == "served" and summary["current_rows"] == 1000
    assert summary["drifted_features"] == [] and "days_since_first_txn" in summary["not_compared"]
    assert "not compared: days_since_first_txn" in result.output
    assert summary["prediction_drift"]["drifted"] is False
