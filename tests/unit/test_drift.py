"""Drift reports on synthetic windows with known shifts (real Evidently, no registry)."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.movement import MAX_DISTANCE_THRESHOLD, usual_movement
from monitoring.cli import app
from monitoring.drift import DISTANCE_THRESHOLD, DriftInputError, attach_labels, run_report

FEATURES = [f"f{i}" for i in range(10)]
SHIFTED = ["f2", "f7"]


def window(rows: int, seed: int, shift: float = 0.0, score_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    for name in SHIFTED:
        frame[name] += shift
    return frame.assign(score=rng.beta(1 + score_shift, 12, rows))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drift")
    window(5000, 0).to_parquet(folder / "reference.parquet")
    window(3000, 1, shift=0.6, score_shift=3).to_parquet(folder / "current.parquet")
    return folder


def test_the_shifted_features_and_only_they_are_flagged():
    result = run_report(window(5000, 0), window(3000, 1, shift=0.6, score_shift=3), FEATURES)
    assert result.summary["drifted_features"] == SHIFTED and result.summary["drift_share"] == 0.2
    assert result.summary["prediction_drift"]["drifted"] is True and result.quality is None


def test_the_same_population_is_not_flagged():
    summary = run_report(window(5000, 0), window(3000, 1), FEATURES).summary
    assert summary["drifted_features"] == [] and summary["prediction_drift"]["drifted"] is False


def test_a_small_window_is_decided_by_a_ks_test_corrected_for_the_columns_compared():
    summary = run_report(window(5000, 0), window(400, 1, shift=0.6), FEATURES).summary
    assert summary["drifted_features"] == SHIFTED
    assert {f["method"] for f in summary["per_feature"].values()} == {"ks"}
    assert summary["per_feature"]["f0"]["threshold"] == pytest.approx(0.05 / (len(FEATURES) + 1))


def test_a_categorical_score_is_compared_as_shares():
    rng = np.random.default_rng(4)
    reference = window(5000, 0).assign(score=rng.choice(5, 5000))
    same = window(3000, 1).assign(score=rng.choice(5, 3000))
    moved = window(3000, 2).assign(score=rng.choice(5, 3000, p=[0.4, 0.15, 0.15, 0.15, 0.15]))  # one segment doubles
    assert run_report(reference, same, FEATURES, categorical_score=True).summary["prediction_drift"]["drifted"] is False
    score = run_report(reference, moved, FEATURES, categorical_score=True).summary["prediction_drift"]
    assert score["drifted"] is True and score["method"] == "jensenshannon"


def test_labels_join_to_the_first_outcome_after_the_prediction_and_add_quality():
    current = window(2000, 2).assign(customer_id=[f"C{i}" for i in range(2000)],
                                     time=pd.Timestamp("2026-01-01", tz="UTC"))
    rng = np.random.default_rng(3)
    labels = pd.DataFrame({"customer_id": current["customer_id"], "time": pd.Timestamp("2026-02-01", tz="UTC"),
                           "label": (rng.random(2000) < current["score"]).astype(int)})
    too_early = labels.head(5).assign(time=pd.Timestamp("2025-12-01", tz="UTC"), label=1 - labels["label"].head(5))
    joined = attach_labels(current, pd.concat([too_early, labels]))
    assert joined.set_index("customer_id").loc[current["customer_id"], "label"].tolist() == labels["label"].tolist()
    result = run_report(window(5000, 0), joined, FEATURES)
    assert result.summary["quality"]["labelled_rows"] == 2000 and 0.5 < result.summary["quality"]["RocAuc"] <= 1


def history(months: int, step: dict[str, float], rows: int = 4000) -> pd.DataFrame:
    """`months` monthly periods of FEATURES; each feature in `step` moves that many sd a month, the others not."""
    periods = []
    for k in range(months):
        frame = window(rows, 100 + k)
        for name, size in step.items():
            frame[name] += size * k
        periods.append(frame.assign(period=pd.Timestamp("2025-01-01", tz="UTC") + pd.DateOffset(months=k)))
    return pd.concat(periods, ignore_index=True)


def test_a_feature_that_moves_every_month_gets_a_threshold_above_its_usual_movement():
    movement = usual_movement(history(14, {"f2": 0.1, "f7": 1.0}), FEATURES, "period")
    rows = movement["features"]
    assert 0.1 <= rows["f2"]["movement"] < 0.16  # the largest of twelve: a little above the step
    assert rows["f2"]["threshold"] == pytest.approx(1.25 * rows["f2"]["movement"], abs=1e-3)
    assert rows["f7"]["threshold"] == MAX_DISTANCE_THRESHOLD  # a quarter of a sd stays findable on every feature
    assert {rows[f]["threshold"] for f in FEATURES if f not in ("f2", "f7")} == {DISTANCE_THRESHOLD}
    assert len(movement["pairs"]) == 12  # a year: 12 pairs; the first of 13 is older


def test_a_raised_threshold_keeps_the_usual_movement_quiet_and_still_finds_a_quarter_sd():
    reference, thresholds = window(5000, 0), {"f2": 0.19, "f7": 0.19}
    seasonal = window(3000, 1, shift=0.15)
    assert run_report(reference, seasonal, FEATURES).summary["drifted_features"] == SHIFTED
    summary = run_report(reference, seasonal, FEATURES, thresholds=thresholds).summary
    assert summary["drifted_features"] == [] and summary["raised_thresholds"] == thresholds
    assert summary["per_feature"]["f2"]["threshold"] == 0.19
    moved = run_report(reference, window(3000, 1, shift=0.3), FEATURES, thresholds=thresholds).summary
    assert moved["drifted_features"] == SHIFTED
    small = run_report(reference, window(400, 1, shift=0.6), FEATURES, thresholds=thresholds).summary
    assert small["raised_thresholds"] == {} and small["drifted_features"] == SHIFTED  # K-S decides: no distance


def test_a_window_without_a_feature_is_refused_by_name():
    with pytest.raises(DriftInputError, match="lacks column.*f3"):
        run_report(window(500, 0), window(500, 1).drop(columns="f3"), FEATURES)


def test_the_command_writes_the_report_and_fails_above_the_threshold(files, tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    args = ["drift-report", "--model", "churn", "--version", "1", "--reference", str(files / "reference.parquet"),
            "--current", str(files / "current.parquet"), "--reports-dir", str(tmp_path / "reports")]
    passed = CliRunner().invoke(app, [*args, "--fail-above", "0.5"])
    assert passed.exit_code == 0, passed.output
    assert "2 of 10 features drifted (20%): f2, f7" in passed.output
    [folder] = (tmp_path / "reports").iterdir()
    assert {p.name for p in folder.iterdir()} >= {"drift.html", "drift.json", "summary.json"}
    assert json.loads((folder / "summary.json").read_text())["drifted_features"] == SHIFTED
    assert list((tmp_path / "evidently").rglob("*.json"))  # the run is in the Evidently workspace
    failed = CliRunner().invoke(app, [*args, "--fail-above", "0.1", "--no-workspace"])
    assert failed.exit_code == 1 and "above 0.1" in failed.output


def test_the_command_names_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["drift-report", "--version", "1", "--reference", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 2 and "nope.parquet does not exist" in result.output


def test_a_window_of_the_log_takes_naive_times_as_utc(tmp_path):
    from datetime import datetime

    from monitoring.drift import read_log

    times = pd.to_datetime(["2026-01-01 10:00", "2026-01-01 12:00", "2026-01-01 14:00"], utc=True)
    folder = tmp_path / "churn" / "version=1"
    folder.mkdir(parents=True)
    pd.DataFrame({"time": times, "role": "champion", "score": [0.1, 0.2, 0.3]}).to_parquet(folder / "part.parquet")
    window = read_log(tmp_path / "churn", since=datetime(2026, 1, 1, 11), until=datetime(2026, 1, 1, 13))
    assert window["score"].tolist() == [0.2]


def test_a_window_leaves_out_rows_whose_features_the_caller_set_unless_asked(tmp_path):
    from monitoring.drift import read_log

    old = tmp_path / "churn" / "date=2026-01-01"  # written before the log had the column: not overridden
    new = tmp_path / "churn" / "date=2026-01-02"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    pd.DataFrame({"time": pd.to_datetime(["2026-01-01 10:00"], utc=True), "role": "champion", "score": [0.1]}).to_parquet(old / "a.parquet")
    pd.DataFrame({"time": pd.to_datetime(["2026-01-02 10:00"] * 2, utc=True), "role": "champion", "score": [0.2, 0.9],
                  "overridden": [False, True]}).to_parquet(new / "b.parquet")
    assert sorted(read_log(tmp_path / "churn")["score"]) == [0.1, 0.2]
    assert sorted(read_log(tmp_path / "churn", overridden=True)["score"]) == [0.1, 0.2, 0.9]


def test_the_retention_job_removes_the_days_past_the_retention_of_every_family(tmp_path, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from monitoring.cli import app

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    today = datetime.now(UTC).date()
    days = {family: [today - timedelta(days=n) for n in (0, 89, 90, 91, 400)] for family in ("churn", "fraud")}
    for family, dates in days.items():
        for day in dates:
            folder = tmp_path / "inference_log" / family / f"date={day:%Y-%m-%d}"
            folder.mkdir(parents=True)
            (folder / "part.parquet").write_bytes(b"x")
    (tmp_path / "inference_log" / "churn" / "notes").mkdir()  # not a day's folder: left alone
    result = CliRunner().invoke(app, ["prune-log", "--days", "90"])
    assert result.exit_code == 0, result.output
    for family, dates in days.items():
        kept = sorted(p.name for p in (tmp_path / "inference_log" / family).glob("date=*"))
        assert kept == sorted(f"date={d:%Y-%m-%d}" for d in dates[:3]), family  # today and the 89 and 90 days before
    assert (tmp_path / "inference_log" / "churn" / "notes").is_dir() and "removed 4 day(s)" in result.output
