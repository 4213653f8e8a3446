"""Drift reports (Evidently): has the data a model sees moved away from what it was built for?

Each model version stores two references in its MLflow run:
* `served_reference.parquet`, the default: what the service will see, scored by the version as the
  service scores it (every customer of the latest snapshot for churn and segment, the last
  period's transactions for fraud). Against it a report answers "is today's traffic still the
  traffic this version was checked against?"
* `reference.parquet` (`--reference training`): a sample of the training rows. Against it a report
  answers "does the model see what it learnt from?"; churn and segment learn from active customers
  only, so served traffic of all customers differs from it with nothing wrong.
The current window is a slice of the inference log or any file with the same columns (one without
a `score` column is scored by the version first: scoring/frames.py).

How a column is decided drifted, sized to the window (measured in loadtests/drift_alarms.py):
* 2,000 rows or more: Evidently's normed Wasserstein distance (the distance in standard deviations
  of the reference), drifted at 0.1 or more. It measures how far the distribution moved, which does
  not grow with the window: a test of significance at 10,000 rows flags shifts too small to matter
  (K-S, even at the corrected p-value, flagged 2.7 of 47 features between snapshots five days
  apart; Wasserstein none).
* Fewer rows: the two-sample K-S test, at a p-value of 0.05 divided by the columns compared
  (Bonferroni), so that a window of no drift flags one column in twenty reports at most. The
  distance is noisy there on heavy-tailed amounts: from 1,000 rows (Evidently's cut-over) a
  1,000-row fraud window of no drift flagged 3 of 28 features, which fires the alert; with K-S
  below 2,000 rows no window did.
* A categorical score (segment's id) the same way, as shares: Jensen-Shannon distance from 2,000
  rows, chi-square below.
* A feature that moves from one period to the next with nothing wrong (the season moves fraud's
  7- and 30-day counts by up to 0.14 sd a month on the default data) has its distance threshold
  raised to 1.25 times its usual movement: the largest distance between consecutive periods of the
  training history, measured at training (core.movement) and stored with the version
  (`drift_thresholds.json`). A raised threshold stays at 0.2 at most, so a shift of a quarter of a
  standard deviation is still found on every feature. A report lists the raised ones.
Features in core.feature_sets.GROWS_WITH_TIME are left out of the share and listed with the reason.

    reference = load_reference("churn", "3", tracking_uri, cache_dir)              # served
    thresholds = load_thresholds("churn", "3", tracking_uri, cache_dir)
    current = read_log(log_dir / "churn", since, until, version="3")
    result = run_report(reference, current, features, thresholds=thresholds)
    result.summary["drift_share"], result.drift.save_html("report.html")
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.feature_sets import GROWS_WITH_TIME
from core.movement import DISTANCE_THRESHOLD

log = logging.getLogger(__name__)
SCORE = "score"
DISTANCE_FROM_ROWS = 2_000
FAMILY_WISE_P = 0.05
# The alert (monitoring/prometheus/alerts.yml) fires on a drifted share above this: set from the
# false alarms measured in loadtests/drift_alarms.py (results/drift_alarms.md).
ALERT_SHARE = 0.1
LABEL = "label"
# Time a label may lag the prediction it belongs to, when they are joined by customer and time.
LABEL_TOLERANCE = pd.Timedelta(days=90)


class DriftInputError(ValueError):
    """The reference or the window cannot be compared (missing columns, no rows)."""


def _download(family: str, version: str, artifact: str, tracking_uri: str, cache_dir: Path) -> Path:
    import mlflow

    from core.registry import mlflow_client

    run_id = mlflow_client(tracking_uri).get_model_version(family, version).run_id
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                    dst_path=str(cache_dir / family / f"v{version}"), tracking_uri=tracking_uri))


def load_reference(family: str, version: str, tracking_uri: str, cache_dir: Path, kind: str = "served") -> pd.DataFrame:
    """A reference stored with a registry version: `served` (default) or `training`."""
    from core.registry import REFERENCE_ARTIFACT, SERVED_REFERENCE_ARTIFACT

    artifact = {"served": SERVED_REFERENCE_ARTIFACT, "training": REFERENCE_ARTIFACT}[kind]
    try:
        return pd.read_parquet(_download(family, version, artifact, tracking_uri, cache_dir))
    except Exception as e:  # MLflow raises its own or an OSError, depending on the artifact store
        raise DriftInputError(f"{family} version {version} has no {artifact} (trained before it was stored?); "
                              f"retrain it, or pass --reference with another reference or a file") from e


def load_thresholds(family: str, version: str, tracking_uri: str, cache_dir: Path) -> dict[str, float]:
    """The per-feature distance thresholds stored with a version (`distance_thresholds`); none for
    a version trained before they were stored, whose features all get DISTANCE_THRESHOLD."""
    from core.registry import THRESHOLDS_ARTIFACT

    try:
        path = _download(family, version, THRESHOLDS_ARTIFACT, tracking_uri, cache_dir)
    except Exception:  # MLflow raises its own or an OSError, depending on the artifact store
        log.warning("%s version %s has no %s: every feature is decided at %g", family, version, THRESHOLDS_ARTIFACT,
                    DISTANCE_THRESHOLD)
        return {}
    return {name: row["threshold"] for name, row in json.loads(path.read_text())["features"].items()}


def read_log(directory: Path, since: datetime | None = None, until: datetime | None = None,
             version: str | None = None, roles: tuple[str, ...] = ("champion", "challenger"),
             overridden: bool = False) -> pd.DataFrame:
    """A window of the inference log of one family (core/decision_log.py: read_window), or
    DriftInputError saying why there is none."""
    from core.decision_log import NoLog, read_window

    try:
        return read_window(directory, since, until, version, roles, overridden)
    except NoLog as e:
        raise DriftInputError(str(e)) from e


def attach_labels(current: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Each prediction's outcome: the customer's first label at or after the prediction (within
    LABEL_TOLERANCE); labels: customer_id, time, label."""
    missing = {"customer_id", "time", LABEL} - set(labels.columns)
    if missing:
        raise DriftInputError(f"the labels file lacks column(s) {', '.join(sorted(missing))}")
    left = current.assign(time=pd.to_datetime(current["time"], utc=True)).sort_values("time")
    right = labels[["customer_id", "time", LABEL]].assign(time=pd.to_datetime(labels["time"], utc=True)).sort_values("time")
    joined = pd.merge_asof(left, right, on="time", by="customer_id", direction="forward", tolerance=LABEL_TOLERANCE)
    return joined


@dataclass
class DriftResult:
    drift: object  # evidently Snapshot (save_html, save_json, dict): current window against the reference
    quality: object | None  # evidently Snapshot of classification quality on the labelled rows, if any
    summary: dict


def drift_test(rows: int, columns: int, categorical: bool = False) -> tuple[str, float]:
    """Evidently's method and threshold for a window of `rows` rows comparing `columns` columns: a
    distance from DISTANCE_FROM_ROWS (Wasserstein, or Jensen-Shannon for a category), a test
    corrected for the columns below (K-S, or chi-square for a category)."""
    if rows >= DISTANCE_FROM_ROWS:
        return ("jensenshannon" if categorical else "wasserstein"), DISTANCE_THRESHOLD
    return ("chisquare" if categorical else "ks"), FAMILY_WISE_P / columns


def run_report(reference: pd.DataFrame, current: pd.DataFrame, features: list[str],
               categorical_score: bool = False, thresholds: dict[str, float] | None = None) -> DriftResult:
    """Data drift per feature and prediction drift; quality too when `current` has a `label` column.
    `categorical_score`: the score is a category (segment's id), compared as shares, not as a number.
    `thresholds`: per feature, the distance threshold when the window is decided by distance (the
    version's, from `load_thresholds`); DISTANCE_THRESHOLD for the others."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset

    if current.empty:
        raise DriftInputError("the current window has no rows")
    compared = [f for f in features if f not in GROWS_WITH_TIME]
    columns = [*compared, SCORE]
    for name, frame in (("reference", reference), ("current window", current)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DriftInputError(f"the {name} lacks column(s): {', '.join(missing[:10])}")
    if categorical_score:
        definition = DataDefinition(numerical_columns=compared, categorical_columns=[SCORE])
        reference, current = (frame.assign(score=frame[SCORE].astype(int).astype(str)) for frame in (reference, current))
    else:
        definition = DataDefinition(numerical_columns=columns)
    # One ValueDrift per column: the drift preset computes each column's test twice and draws more
    # (12-20 s against 5-6 s for 100,000 rows of 49 columns here); the share is counted below.
    method, threshold = drift_test(len(current), len(columns))
    score_method, score_threshold = drift_test(len(current), len(columns), categorical_score)
    if method == "wasserstein":
        raised = {c: t for c, t in (thresholds or {}).items() if c in compared and t > threshold}
    else:
        raised = {}
    per_column = [*(ValueDrift(column=c, method=method, threshold=raised.get(c, threshold)) for c in compared),
                  ValueDrift(column=SCORE, method=score_method, threshold=score_threshold)]
    drift = Report(per_column, include_tests=True).run(Dataset.from_pandas(current[columns], data_definition=definition),
                                                  Dataset.from_pandas(reference[columns], data_definition=definition))
    quality = None
    if LABEL in current and current[LABEL].notna().any():
        labelled = current.loc[current[LABEL].notna(), [SCORE, LABEL]].astype({LABEL: int})
        definition = DataDefinition(numerical_columns=[SCORE], classification=[BinaryClassification(target=LABEL, prediction_probas=SCORE)])
        quality = Report([ClassificationPreset()]).run(Dataset.from_pandas(labelled, data_definition=definition), None)
    summary = summarize(drift.dict(), compared, len(reference), len(current))
    summary["not_compared"] = {f: GROWS_WITH_TIME[f] for f in features if f in GROWS_WITH_TIME}
    summary["raised_thresholds"] = raised
    if quality is not None:
        summary["quality"] = read_quality(quality.dict(), int(current[LABEL].notna().sum()))
    return DriftResult(drift, quality, summary)


def read_quality(report: dict, rows: int) -> dict:
    wanted = ("Accuracy", "Precision", "Recall", "F1Score", "RocAuc", "LogLoss")
    figures = {m["metric_name"].split("(")[0]: m["value"] for m in report["metrics"]
               if m["metric_name"].split("(")[0] in wanted and isinstance(m["value"], int | float)}
    return {"labelled_rows": rows, **figures}


def summarize(report: dict, features: list[str], reference_rows: int, current_rows: int) -> dict:
    """The figures a person or a pipeline needs, read from the report by metric name."""
    drifted: dict[str, bool] = {}
    scores: dict[str, dict] = {}
    for metric in report["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            scores[config["column"]] = {"value": float(metric["value"]), "method": config["method"],
                                        "threshold": float(config["threshold"])}
    for test in report.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith(":ValueDrift"):
            drifted[params["column"]] = str(getattr(test["status"], "value", test["status"])) == "FAIL"
    drifted_features = sorted(f for f in features if drifted.get(f))
    return {
        "reference_rows": reference_rows, "current_rows": current_rows,
        "features": len(features), "drifted_features": drifted_features,
        "drift_share": len(drifted_features) / len(features) if features else 0.0,
        "prediction_drift": {"drifted": drifted.get(SCORE, False), **scores.get(SCORE, {})},
        "per_feature": {f: {**scores.get(f, {}), "drifted": drifted.get(f, False)} for f in features},
        "quality": None,
    }
