"""Quality of model versions on the latest labelled data, side by side (the promotion's quality gate).

* churn: the last snapshot whose 60-day outcome is known, active customers (as in training);
* fraud: the most recent fifth of a sample of labelled transactions, features joined point in time;
* segment: no labels, so no quality figure.

    window = labelled_window("fraud", settings, ["fraud_v1", "fraud_v2"])   # the services the versions read
    compare(window, {"champion": model_v1, "challenger": model_v2})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from core.families import FAMILIES
from core.settings import Settings

FRAUD_SAMPLE = 50_000


@dataclass
class LabelledWindow:
    family: str
    frame: pd.DataFrame
    description: str


def labelled_window(family: str, settings: Settings, feature_services: Iterable[str] = ()) -> LabelledWindow | None:
    """feature_services: the ones the compared versions read (fraud: the window carries all their
    features; default fraud's current one)."""
    if FAMILIES[family].label is None:
        return None
    if FAMILIES[family].rows == "customer":
        labels_path = settings.features_dir / "churn_labels.parquet"
        snapshot = pd.read_parquet(labels_path, columns=["event_timestamp"])["event_timestamp"].max()
        only = [("event_timestamp", "==", snapshot)]  # read that snapshot's rows alone, not every snapshot's
        latest = pd.read_parquet(labels_path, filters=only)
        features = pd.read_parquet(settings.features_dir / "customer_features.parquet", filters=only)
        frame = latest.merge(features, on=["customer_id", "event_timestamp"])
        frame = frame[frame["txn_count_90d"] > 0].reset_index(drop=True)
        return LabelledWindow(family, frame, f"churn outcomes of the {snapshot:%Y-%m-%d} snapshot, "
                                             f"{len(frame):,} active customers")
    from training import pipeline, store

    sample = settings.model_copy(update={"fraud_sample": min(settings.fraud_sample, FRAUD_SAMPLE)})
    trainer = pipeline.TRAINERS[family]
    _, _, test = trainer.supervised.split(trainer.training_set(store.open_store(sample), sample, *dict.fromkeys(feature_services)))
    frame = test.reset_index(drop=True)
    return LabelledWindow(family, frame, f"{len(frame):,} labelled transactions from "
                                         f"{frame['event_timestamp'].min():%Y-%m-%d} on")


def pr_auc(booster, features: list[str], window: LabelledWindow) -> float:
    """PR-AUC ranks by score, so the raw booster output serves (calibration is monotone)."""
    scores = booster.inplace_predict(window.frame[features].to_numpy(dtype=np.float64))
    return float(average_precision_score(window.frame[FAMILIES[window.family].label], scores))


def compare(window: LabelledWindow, versions: dict) -> dict:
    """versions: role -> a loaded version (scoring.loading.LoadedVersion)."""
    figures = {role: pr_auc(v.model, v.metadata["features"], window) for role, v in versions.items()}
    return {"metric": "pr_auc", **figures, "rows": len(window.frame),
            "positives": int(window.frame[FAMILIES[window.family].label].sum()), "window": window.description}
