"""Model behaviour: directional expectations, invariance, and a guard against label leakage."""

import numpy as np
import pandas as pd
import pytest

from core.feature_sets import CHURN_FEATURES, FRAUD_CUSTOMER_FEATURES, SEGMENT_FEATURES
from core.realtime import REQUEST_FIELDS, transaction_features
from scoring.base import ModelInfo, OnlineFeatures
from scoring.churn import ChurnScorer
from training.features import PROFILE_FEATURES, churn_labels, compute_features, snapshot_dates
from training.models import churn_probability, out_of_time_split, train_churn, train_fraud, train_segment

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


class TableReader:
    """Serves each customer id's row of a frame, as the online store would."""

    def __init__(self, frame: pd.DataFrame, ids: list[str]):
        self.values = dict(zip(ids, frame[CHURN_FEATURES].to_numpy(dtype=float)))

    def read(self, feature_service, rows):
        table = np.array([self.values[row["customer_id"]] for row in rows]).reshape(len(rows), len(CHURN_FEATURES))
        return OnlineFeatures({name: table[:, j] for j, name in enumerate(CHURN_FEATURES)}, np.ones(len(rows), dtype=bool))


def test_a_served_score_depends_on_the_customers_features_only_not_its_id_or_its_batch(churn, churn_frame):
    """Through the service's scorer: the same features under another id, or scored alone instead of
    in a shuffled batch of 300, give the same probability and the same reasons."""
    rows = churn_frame.head(300).reset_index(drop=True)
    ids, other_ids = [f"C{i}" for i in range(len(rows))], [f"Z{i}" for i in range(len(rows))]
    metadata = {**churn.metadata, "features": CHURN_FEATURES}
    info = ModelInfo("churn", "1", "champion", "churn_v1")
    scorer = ChurnScorer(churn.model.get_booster(), metadata, info, TableReader(rows, ids))
    renamed = ChurnScorer(churn.model.get_booster(), metadata, info, TableReader(rows, other_ids))

    order = np.random.default_rng(0).permutation(len(rows))
    batch = {r["customer_id"]: r for r in scorer.score([{"customer_id": ids[i]} for i in order])}
    under_other_ids = renamed.score([{"customer_id": c} for c in other_ids])
    for i in range(0, len(rows), 10):
        [alone] = scorer.score([{"customer_id": ids[i]}])
        for other in (batch[ids[i]], under_other_ids[i]):
            assert other["churn_probability"] == alone["churn_probability"], i
            assert other["reasons"] == alone["reasons"], i
    assert len({r["churn_probability"] for r in batch.values()}) > 100  # the rows do differ


def test_shuffled_labels_give_a_chance_level_auc(churn_frame):
    rng = np.random.default_rng(0)
    shuffled = churn_frame.assign(churned=rng.permutation(churn_frame["churned"].to_numpy()))
    model = train_churn(shuffled, seed=1)
    assert abs(model.metrics["test_roc_auc"] - 0.5) < 0.07


@pytest.fixture(scope="module")
def fraud(fraud_frame):
    return train_fraud(fraud_frame, seed=1)


def test_fraud_probabilities_are_calibrated_and_the_costs_choose_accept_review_and_block(fraud):
    """Calibrated on the validation period, the mean probability on the test period is near its
    fraud rate, and the Brier score is no worse than the booster's own (trained with
    scale_pos_weight, which can overstate the odds)."""
    m = fraud.metrics
    assert m["test_brier"] <= 1.05 * m["test_brier_uncalibrated"]
    curve = fraud.artifacts["calibration_curve"]
    mean_p = (curve["mean_predicted"] * curve["rows"]).sum() / curve["rows"].sum()
    assert 0.5 < mean_p / m["test_fraud_rate"] < 2.0
    thresholds = fraud.metadata["outcome_thresholds"]
    assert 0 < thresholds["review"] <= thresholds["block"] <= 1 and fraud.metadata["threshold"] == thresholds["review"]
    assert fraud.metadata["costs"] == {"missed": 200.0, "review": 4.0, "blocked_good": 25.0}
    assert m["test_cost_per_1000"] < m["test_cost_per_1000_accept_all"]  # the outcomes pay for themselves out of time
    assert 0 < m["test_review_rate"] < 0.5 and m["test_recall_stopped"] >= m["test_recall_blocked"]


def test_an_amount_far_above_the_norm_never_lowers_fraud_risk(fraud_frame, fraud):
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



def test_the_served_segment_model_is_data_and_assigns_every_customer_as_the_pipeline_does(tables):
    """The service loads no pickle: the version's metadata carries the transform and the centres
    (numbers), and the segments they give are the fitted pipeline's, customer for customer."""
    import json

    from scoring.segment import SegmentCentres

    _, features = tables
    latest = features[(features["event_timestamp"] == features["event_timestamp"].max()) & (features["txn_count_90d"] > 0)]
    segment = train_segment(latest, range(3, 6), seed=1)
    stored = json.loads(json.dumps(segment.metadata["segment_model"]))  # as the registry's MLmodel file holds it
    served = SegmentCentres.from_metadata(stored)
    x = latest[SEGMENT_FEATURES]
    assert (served.predict(x) == segment.model.predict(x)).all() and len(x) > 100
    with pytest.raises(ValueError, match="centres"):
        SegmentCentres.from_metadata({**stored, "centres": stored["centres"][:1] + [[1.0]]})


def test_out_of_time_split_keeps_the_future_out_of_training(churn_frame):
    train, valid, test = out_of_time_split(churn_frame, "event_timestamp")
    assert train["event_timestamp"].max() < valid["event_timestamp"].min() <= test["event_timestamp"].min()
