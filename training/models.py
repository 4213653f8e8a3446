"""The three models, trained from plain DataFrames (no Feast, no MLflow here).

* churn: XGBoost with Platt-calibrated probabilities and risk-level cut-offs;
* fraud: XGBoost with Platt-calibrated probabilities and accept / review / block thresholds
  chosen on validation data from stated costs;
* segment: scaling + k-means, k chosen by silhouette, segments named from their centroids.

Monotone constraints keep the model honest where the direction is known: more days since the
last transaction never lowers churn risk, an amount further above the customer's norm never
lowers fraud risk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from core.decisions import RISK_LEVELS, calibrate, logit, risk_level
from core.feature_sets import CHURN_FEATURES, FRAUD_FEATURES, SEGMENT_FEATURES
from core.reasons import catalogue, typical_values
from training.outcomes import Costs, choose_thresholds, outcome_metrics

# Share of the validation population above each cut-off: critical = top 5%, high = next 10%, ...
RISK_SHARES = {"medium": 0.35, "high": 0.15, "critical": 0.05}
CHURN_INCREASING = ("days_since_last_txn", "recency_vs_gap")
FRAUD_INCREASING = ("amount_log_z", "amount_to_median", "amount_to_max")
DEFAULT_COSTS = Costs(missed=200.0, review=4.0, blocked_good=25.0)  # Settings.fraud_cost_* are these by default


@dataclass
class TrainedModel:
    name: str
    model: object
    features: list[str]
    params: dict
    metrics: dict[str, float]
    metadata: dict = field(default_factory=dict)  # stored with the model in the registry
    artifacts: dict[str, pd.DataFrame] = field(default_factory=dict)


def _monotone(features: list[str], increasing: tuple[str, ...]) -> str:
    return "(" + ",".join("1" if f in increasing else "0" for f in features) + ")"


def _xgb(features: list[str], increasing: tuple[str, ...], seed: int, **overrides) -> xgb.XGBClassifier:
    params = dict(
        n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.8, colsample_bytree=0.8,
        min_child_weight=5, eval_metric="aucpr", n_jobs=2, random_state=seed, tree_method="hist",
        monotone_constraints=_monotone(features, increasing),
    )
    params.update(overrides)
    return xgb.XGBClassifier(**params)


# Fraud is about 0.5% of transactions: equal-count bins would put every fraud in the last one
FRAUD_CALIBRATION_EDGES = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.6, 0.9, 1.0)


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10, edges: tuple[float, ...] | None = None) -> pd.DataFrame:
    """The calibration curve on the test set: rows in `bins` equal-count bins of predicted probability
    (or in bins between `edges`), each bin's mean prediction beside the share that was positive."""
    frame = pd.DataFrame({"predicted": p, "observed": y})
    if edges is None:
        frame["bin"] = pd.qcut(frame["predicted"], bins, labels=False, duplicates="drop")
    else:
        frame["bin"] = pd.cut(frame["predicted"], edges, labels=False, include_lowest=True)
    table = frame.groupby("bin").agg(mean_predicted=("predicted", "mean"), observed_rate=("observed", "mean"),
                                     rows=("observed", "size"))
    return table.reset_index()


def precision_recall_table(y: np.ndarray, p: np.ndarray, points: int = 101) -> pd.DataFrame:
    """Precision and recall on the test set at `points` thresholds evenly spaced from 0 to 1
    (precision is NaN where nothing is flagged)."""
    thresholds = np.linspace(0.0, 1.0, points)
    order = np.sort(p)
    positives = np.sort(p[y == 1])
    flagged = len(p) - np.searchsorted(order, thresholds, side="left")
    caught = len(positives) - np.searchsorted(positives, thresholds, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(flagged > 0, caught / flagged, np.nan)
    return pd.DataFrame({"threshold": thresholds, "precision": precision, "recall": caught / max(len(positives), 1)})


def churn_probability(model: xgb.XGBClassifier, calibration: dict, frame: pd.DataFrame) -> np.ndarray:
    """Calibrated churn probability of each row; reads only the model's features, by name."""
    return calibrate(model.predict_proba(frame[CHURN_FEATURES])[:, 1], calibration)


def out_of_time_split(frame: pd.DataFrame, time_column: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Churn: the last labelled snapshot is the test set and the one before it validation."""
    times = np.sort(frame[time_column].unique())
    if len(times) < 3:
        raise ValueError(f"need at least 3 labelled snapshots for an out-of-time split, got {len(times)}")
    return (frame[frame[time_column] < times[-2]], frame[frame[time_column] == times[-2]],
            frame[frame[time_column] == times[-1]])


def fraud_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Fraud: the last 20% of the time range is the test set, the 20% before it validation."""
    frame = frame.sort_values("event_timestamp")
    times = frame["event_timestamp"]
    valid_from, test_from = times.quantile(0.6), times.quantile(0.8)
    return frame[times < valid_from], frame[(times >= valid_from) & (times < test_from)], frame[times >= test_from]


# What the retraining search (rollout/retrain.py) varies, on top of _xgb's defaults
SEARCHED = ("n_estimators", "max_depth", "learning_rate", "min_child_weight", "subsample", "colsample_bytree")


@dataclass(frozen=True)
class Supervised:
    """What fitting a labelled family's booster takes besides its features: the features its risk
    only rises with, its label, how its rows split into train, validation and test, and the
    parameters fixed over _xgb's defaults."""

    increasing: tuple[str, ...]
    label: str
    split: Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]
    fixed: dict = field(default_factory=dict)


CHURN = Supervised(CHURN_INCREASING, "churned", lambda frame: out_of_time_split(frame, "event_timestamp"))
# scale_pos_weight: fraud is about 1% of transactions
FRAUD = Supervised(FRAUD_INCREASING, "is_fraud", fraud_split, {"scale_pos_weight": 5.0})


def validation_pr_auc(how: Supervised, frame: pd.DataFrame, features: list[str], params: dict, seed: int = 42) -> float:
    """PR-AUC on the validation part of `frame` of a model fitted on its training part with
    `params`: what a search trial scores (the test part stays unseen until the chosen one)."""
    train, valid, _ = how.split(frame)
    model = _xgb(features, how.increasing, seed, **{**how.fixed, **params})
    model.fit(train[features], train[how.label])
    return float(average_precision_score(valid[how.label], model.predict_proba(valid[features])[:, 1]))


def train_churn(frame: pd.DataFrame, seed: int = 42, params: dict | None = None,
                features: list[str] = CHURN_FEATURES) -> TrainedModel:
    """frame: one row per (customer, snapshot) with `features` (default: churn_v1's), `event_timestamp`
    and `churned`. params: XGBoost parameters over the defaults (a retraining search's choice)."""
    catalogue().require(features, "churn")
    train, valid, test = CHURN.split(frame)
    model = _xgb(features, CHURN.increasing, seed, **{**CHURN.fixed, **(params or {})})
    model.fit(train[features], train["churned"])

    raw_valid = model.predict_proba(valid[features])[:, 1]
    platt = LogisticRegression(C=1e6).fit(logit(raw_valid)[:, None], valid["churned"])
    calibration = {"method": "platt", "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])}
    valid_p = calibrate(raw_valid, calibration)
    cutoffs = {level: float(np.quantile(valid_p, 1 - share)) for level, share in RISK_SHARES.items()}

    raw_test = model.predict_proba(test[features])[:, 1]
    test_p = calibrate(raw_test, calibration)
    y = test["churned"].to_numpy()
    metrics = {
        "test_roc_auc": roc_auc_score(y, test_p),
        "test_pr_auc": average_precision_score(y, test_p),
        "test_brier": brier_score_loss(y, test_p),
        "test_brier_uncalibrated": brier_score_loss(y, raw_test),
        "test_churn_rate": float(y.mean()),
        "train_rows": len(train), "valid_rows": len(valid), "test_rows": len(test),
    }
    levels = risk_level(test_p, cutoffs)
    for level in RISK_LEVELS:
        chosen = levels == level
        metrics[f"test_churn_rate_{level}"] = float(y[chosen].mean()) if chosen.any() else float("nan")

    contributions = model.get_booster().predict(xgb.DMatrix(test[features].head(2000)), pred_contribs=True)
    importance = pd.DataFrame({"feature": features, "mean_abs_shap": np.abs(contributions[:, :-1]).mean(axis=0)})
    importance = importance.sort_values("mean_abs_shap", ascending=False, ignore_index=True)
    return TrainedModel(
        name="churn", model=model, features=list(features), params=model.get_params(), metrics=metrics,
        metadata={"calibration": calibration, "risk_cutoffs": cutoffs, "risk_levels": list(RISK_LEVELS),
                  "typical": typical_values(train, features)},
        artifacts={"feature_importance": importance, "calibration_curve": calibration_table(y, test_p)},
    )


def train_fraud(frame: pd.DataFrame, seed: int = 42, params: dict | None = None,
                features: list[str] = FRAUD_FEATURES, costs: Costs = DEFAULT_COSTS) -> TrainedModel:
    """frame: one row per transaction with `features` (default: fraud_v1's), `event_timestamp` and
    `is_fraud`, split by fraud_split. params: XGBoost parameters over the defaults (a retraining
    search's choice). The probability is Platt-calibrated on the validation period (the booster is
    trained with scale_pos_weight, which inflates its raw output), and the review and block
    thresholds are the least costly there under `costs` (training/outcomes.py); the test period
    reports them."""
    catalogue().require(features, "fraud")
    train, valid, test = FRAUD.split(frame)
    model = _xgb(features, FRAUD.increasing, seed, **{**FRAUD.fixed, **(params or {})})
    model.fit(train[features], train["is_fraud"])

    raw_valid = model.predict_proba(valid[features])[:, 1]
    platt = LogisticRegression(C=1e6).fit(logit(raw_valid)[:, None], valid["is_fraud"])
    calibration = {"method": "platt", "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])}
    thresholds = choose_thresholds(valid["is_fraud"].to_numpy(), calibrate(raw_valid, calibration), costs)

    raw_test = model.predict_proba(test[features])[:, 1]
    test_p = calibrate(raw_test, calibration)
    y = test["is_fraud"].to_numpy()
    metrics = {
        "test_pr_auc": average_precision_score(y, test_p),
        "test_roc_auc": roc_auc_score(y, test_p),
        "test_brier": brier_score_loss(y, test_p),
        "test_brier_uncalibrated": brier_score_loss(y, raw_test),
        **{f"test_{name}": value for name, value in outcome_metrics(y, test_p, thresholds, costs).items()},
        "threshold": thresholds["review"], "review_threshold": thresholds["review"], "block_threshold": thresholds["block"],
        "test_fraud_rate": float(y.mean()),
        "train_rows": len(train), "valid_rows": len(valid), "test_rows": len(test),
    }
    return TrainedModel(
        name="fraud", model=model, features=list(features), params=model.get_params(), metrics=metrics,
        metadata={"calibration": calibration, "outcome_thresholds": thresholds, "costs": costs.as_dict(),
                  "threshold": thresholds["review"],
                  "threshold_rule": "least stated cost on the validation period (review from `review`, block from `block`)",
                  "typical": typical_values(train, features)},
        artifacts={"precision_recall": precision_recall_table(y, test_p), "calibration_curve": calibration_table(y, test_p, edges=FRAUD_CALIBRATION_EDGES)},
    )


# Words for a segment whose centroid is well above the population on a feature.
SEGMENT_WORDS = {
    "days_since_last_txn": "lapsing", "txn_count_90d": "frequent", "spend_90d": "high-value",
    "avg_amount_90d": "big-ticket", "share_groceries_90d": "everyday", "share_dining_90d": "diners",
    "share_travel_90d": "travellers", "share_online_retail_90d": "online shoppers",
    "share_electronics_90d": "gadget buyers", "share_cash_90d": "cash users",
    "share_online_90d": "web-first", "share_mobile_90d": "mobile-first",
}
def segment_names(centroids: np.ndarray) -> dict[int, str]:
    """Name each segment after the (at most two) features on which its scaled centroid stands
    out most above the rest; names are made unique."""
    names: dict[int, str] = {}
    for i, centre in enumerate(centroids):
        top = [SEGMENT_WORDS[SEGMENT_FEATURES[j]] for j in np.argsort(-centre)[:2] if centre[j] > 0.3]
        name = " ".join(top) if top else "steady mainstream"
        names[i] = name if name not in names.values() else f"{name} {i}"
    return names


def train_segment(frame: pd.DataFrame, k_range: range, seed: int = 42, sample: int = 5000) -> TrainedModel:
    """frame: one row per active customer with SEGMENT_FEATURES (the latest snapshot)."""
    catalogue().require(SEGMENT_FEATURES, "segment")
    x = frame[SEGMENT_FEATURES]
    scores: dict[int, float] = {}
    for k in k_range:
        pipeline = _segment_pipeline(k, seed).fit(x)
        labels = pipeline.predict(x)
        scaled = pipeline[:-1].transform(x)
        scores[k] = float(silhouette_score(scaled, labels, sample_size=min(sample, len(x)), random_state=seed))
    best_k = max(scores, key=scores.get)
    pipeline = _segment_pipeline(best_k, seed).fit(x)
    names = segment_names(pipeline[-1].cluster_centers_)
    sizes = np.bincount(pipeline.predict(x), minlength=best_k) / len(x)
    metrics = {"k": best_k, "silhouette": scores[best_k], **{f"silhouette_k{k}": s for k, s in scores.items()},
               **{f"segment_share_{i}": float(s) for i, s in enumerate(sizes)}, "rows": len(x)}
    return TrainedModel(
        name="segment", model=pipeline, features=SEGMENT_FEATURES, params={"k": best_k, "k_range": list(k_range)},
        metrics=metrics, metadata={"segment_names": {str(i): n for i, n in names.items()},
                                   "segment_model": segment_model(pipeline)},
        artifacts={"segment_profiles": segment_profiles(pipeline, names, sizes)},
    )


def segment_profiles(pipeline: Pipeline, names: dict[int, str], shares: np.ndarray) -> pd.DataFrame:
    """Each segment's centroid in business units (days, counts, amounts, shares): the k-means
    centre taken back through the scaler and log1p. With its name and share of the training customers."""
    centres = np.expm1(pipeline.named_steps["scale"].inverse_transform(pipeline.named_steps["kmeans"].cluster_centers_))
    profiles = pd.DataFrame(centres, columns=SEGMENT_FEATURES)
    profiles.insert(0, "share", shares)
    profiles.insert(0, "segment_name", [names[i] for i in range(len(names))])
    profiles.insert(0, "segment_id", range(len(names)))
    return profiles


def segment_model(pipeline: Pipeline) -> dict:
    """The fitted pipeline as numbers (log1p, then the scaler's mean and scale, then the centres):
    what the service loads instead of a pickle (scoring.segment.SegmentCentres)."""
    scaler, kmeans = pipeline.named_steps["scale"], pipeline.named_steps["kmeans"]
    return {"transform": "log1p", "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
            "centres": kmeans.cluster_centers_.tolist()}


def _segment_pipeline(k: int, seed: int) -> Pipeline:
    return Pipeline([
        # every segment feature is a non-negative amount, count or share: log1p tames the long tails
        ("log", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
        ("scale", StandardScaler()),
        ("kmeans", KMeans(n_clusters=k, n_init=5, random_state=seed)),
    ])
