"""The churn quality gate's window (rollout/evaluation.py): the last labelled snapshot's active
customers, read from the feature and label tables without loading every snapshot."""

import pandas as pd

from core.settings import Settings
from rollout.evaluation import labelled_window


def test_the_churn_window_is_the_last_labelled_snapshots_active_customers(tmp_path):
    settings = Settings(data_dir=tmp_path)
    settings.features_dir.mkdir(parents=True)
    snapshots = pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"], utc=True)
    features = pd.DataFrame({"customer_id": [c for _ in snapshots for c in ("A", "B", "C")],
                             "event_timestamp": [s for s in snapshots for _ in range(3)],
                             "txn_count_90d": [1.0, 2.0, 0.0] * 3})
    labels = features[features["event_timestamp"] < snapshots[-1]][["customer_id", "event_timestamp"]].assign(churned=[0, 1, 0, 1, 0, 1])
    features.to_parquet(settings.features_dir / "customer_features.parquet", row_group_size=2)
    labels.to_parquet(settings.features_dir / "churn_labels.parquet", row_group_size=2)

    window = labelled_window("churn", settings)
    assert window.frame["event_timestamp"].unique().tolist() == [snapshots[1]]  # the last one with known outcomes
    assert window.frame[["customer_id", "churned", "txn_count_90d"]].values.tolist() == [["A", 1, 1.0], ["B", 0, 2.0]]  # C: inactive
    assert "2026-02-01" in window.description and "2 active customers" in window.description
