"""Model behaviour: directional expectations, invariance, and a guard against label leakage."""

import numpy as np
import pandas as pd
import pytest

from training.feature_sets import FRAUD_CUSTOMER_FEATURES, SEGMENT_FEATURES
from training.features import PROFILE_FEATURES, churn_labels, compute_features, snapshot_dates
from training.models import churn_probability, out_of_time_split, train_churn, train_fraud, train_segment
from training.realtime import REQUEST_FIELDS, transaction_features

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tables(small_raw):
    out, _ = small_raw
    tx = pd.read_parquet(out / "transactions.parquet")
    features = compute_features(tx, snapshot_dates(tx, 30, 90))
    return tx, features


@pytest.fixture(scope="module")
def churn_frame(tables):
    tx, features = tables
    labels = churn_labels(tx, features, 60)
    frame = labels.merge(features, on=["customer_id", "event_timestamp"])
    return frame[frame["txn_count_90d"] > 0].reset_index(drop=True)


@pytest.fixture(scope="module")
def churn(churn_frame):
    return train_churn(churn_frame, seed=1)


def with_request_features(tx: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """A stand-in for Feast's point-in-time join: each transaction gets its customer's latest snapshot."""
    tx = tx.rename(columns={"timestamp": "event_timestamp"}).sort_values("event_timestamp")
    tx["transaction_time"] = tx["event_timestamp"].astype("int64") // 10**9
    snapshot_cols = ["customer_id", "event_timestamp", *FRAUD_CUSTOMER_FEATURES, *PROFILE_FEATURES]
    joined = pd.merge_asof(tx, features[snapshot_cols].sort_values("event_timestamp"), on="event_timestamp",
                           by="customer_id", allow_exact_matches=True).dropna(subset=["median_amount_90d"])
    inputs = {c: joined[c].tolist() for c in [*REQUEST_FIELDS, *PROFILE_FEATURES, *FRAUD_CUSTOMER_FEATURES]}
    return joined.assign(**transaction_features(inputs)).reset_index(drop=True)


@pytest.fixture(scope="module")
def fraud_frame(tables):
    tx, features = tables
    return with_request_features(tx, features)


def test_churn_model_beats_chance_clearly(churn):
    assert churn.metrics["test_roc_auc"] > 0.8
    rates = [churn.metrics[f"test_churn_rate_{level}"] for level in ("low", "medium", "high", "critical")]
    assert rates == sorted(rates)  # risk levels are ordered by the churn they see


def test_more_days_since_the_last_transaction_never_lowers_churn_risk(churn, churn_frame):
    rows = churn_frame.sample(2000, random_state=0)
    before = churn_probability(churn.model, churn.metadata["calibration"], rows)
    for extra_days in (1, 10, 60):
        later = rows.assign(days_since_last_txn=rows["days_since_last_txn"] + extra_days)
        after = churn_probability(churn.model, churn.metadata["calibration"], later)
        assert (after >= before - 1e-12).all()
    assert (after > before).mean() > 0.5  # and it does move the risk


def test_the_customer_id_alone_does_not_change_a_churn_score(churn, churn_frame):
    rows = churn_frame.head(500)
    renamed = rows.assign(customer_id=[f"Z{i}" for i in range(len(rows))])
    np.testing.assert_array_equal(
        churn_probability(churn.model, churn.metadata["calibration"], rows),
        churn_probability(churn.model, churn.metadata["calibration"], renamed),
    )


def test_shuffled_labels_give_a_chance_level_auc(churn_frame):
    rng = np.random.default_rng(0)
    shuffled = churn_frame.assign(churned=rng.permutation(churn_frame["churned"].to_numpy()))
    model = train_churn(shuffled, seed=1)
    assert abs(model.metrics["test_roc_auc"] - 0.5) < 0.07


def test_an_amount_far_above_the_norm_never_lowers_fraud_risk(fraud_frame):
    fraud = train_fraud(fraud_frame, seed=1)
    assert fraud.metrics["test_pr_auc"] > 0.3 and 0 < fraud.metadata["threshold"] < 1
    rows = fraud_frame[fraud_frame["is_fraud"] == 0].sample(2000, random_state=0)
    before = fraud.model.predict_proba(rows[fraud.features])[:, 1]
    bigger = rows.assign(amount=rows["amount"] * 10)
    inputs = {c: bigger[c].tolist() for c in [*REQUEST_FIELDS, *PROFILE_FEATURES, *FRAUD_CUSTOMER_FEATURES]}
    bigger = bigger.assign(**transaction_features(inputs))
    after = fraud.model.predict_proba(bigger[fraud.features])[:, 1]
    assert (after >= before - 1e-7).all()
    assert after.mean() > 2 * before.mean()


def test_segments_are_chosen_by_silhouette_and_named(tables):
    _, features = tables
    latest = features[(features["event_timestamp"] == features["event_timestamp"].max()) & (features["txn_count_90d"] > 0)]
    segment = train_segment(latest, range(3, 6), seed=1)
    k = segment.metrics["k"]
    assert segment.metrics["silhouette"] == max(segment.metrics[f"silhouette_k{i}"] for i in range(3, 6))
    names = segment.metadata["segment_names"]
    assert len(names) == k and len(set(names.values())) == k
    assert set(segment.model.predict(latest[SEGMENT_FEATURES].head(50))) <= set(range(k))


def test_out_of_time_split_keeps_the_future_out_of_training(churn_frame):
    train, valid, test = out_of_time_split(churn_frame, "event_timestamp")
    assert train["event_timestamp"].max() < valid["event_timestamp"].min() <= test["event_timestamp"].min()
