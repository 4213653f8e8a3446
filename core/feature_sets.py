"""The features: what each feature view holds (training/features.py computes them) and which
features each model version reads (the FeatureServices in feature_repo/services.py are built from
these lists, and training orders its columns by them)."""

from __future__ import annotations

from core.families import FAMILIES
from core.realtime import OUTPUT_FEATURES
from core.schema import CHANNELS, MERCHANT_CATEGORIES
from core.stream_features import BEFORE_FEATURES

WINDOWS = (7, 30, 90, 180)

ACTIVITY_FEATURES = [
    "days_since_last_txn", "days_since_first_txn",
    *[f"txn_count_{w}d" for w in WINDOWS], *[f"spend_{w}d" for w in WINDOWS],
    "avg_amount_30d", "avg_amount_90d", "active_days_30d", "active_days_90d", "active_weeks_12w",
    "spend_trend_30_90", "count_trend_30_90", "spend_trend_90_180", "count_trend_90_180",
    "spend_slope_12w", "count_slope_12w",
    "gap_mean_90d", "gap_std_90d", "gap_max_90d", "gap_mean_180d", "recency_vs_gap",
]
SPEND_MIX_FEATURES = [
    *[f"share_{c}_90d" for c in MERCHANT_CATEGORIES], *[f"share_{c}_90d" for c in CHANNELS],
    "distinct_categories_90d", "distinct_merchants_90d", "weekend_share_90d",
]
RISK_FEATURES = [
    "median_amount_90d", "std_amount_90d", "max_amount_90d", "p95_amount_90d",
    "avg_log_amount_365d", "std_log_amount_365d",
    "hour_mean_90d", "hour_std_90d", "night_share_90d",
    "distinct_countries_365d", "foreign_share_90d", "distinct_devices_365d",
]

CHURN_FEATURES = ACTIVITY_FEATURES + SPEND_MIX_FEATURES + [
    "avg_log_amount_365d", "night_share_90d", "distinct_countries_365d", "foreign_share_90d",
]
FRAUD_CUSTOMER_FEATURES = RISK_FEATURES + ["txn_count_7d", "txn_count_30d", "avg_amount_30d", "days_since_last_txn"]
FRAUD_FEATURES = FRAUD_CUSTOMER_FEATURES + OUTPUT_FEATURES
FRAUD_V2_FEATURES = FRAUD_FEATURES + BEFORE_FEATURES  # v1's and the stream's view of the hour and day before
SEGMENT_FEATURES = [
    "days_since_last_txn", "txn_count_90d", "spend_90d", "avg_amount_90d",
    "share_groceries_90d", "share_dining_90d", "share_travel_90d", "share_online_retail_90d",
    "share_electronics_90d", "share_cash_90d", "share_online_90d", "share_mobile_90d",
]

# Features that move with the calendar for every customer whatever they do: compared with a
# reference, they would only say that time has passed. Drift reports list them apart, with the
# reason, and leave them out of the drifted share.
GROWS_WITH_TIME = {
    "days_since_first_txn": "the customer's tenure: a day more every day for every customer, so it drifts by construction",
}

FEATURE_SERVICES = {name: family.feature_service for name, family in FAMILIES.items()}
# Every FeatureService's features, in the order a model trained on it reads them
SERVICE_FEATURES = {
    "churn_v1": CHURN_FEATURES, "fraud_v1": FRAUD_FEATURES, "fraud_v2": FRAUD_V2_FEATURES, "segment_v1": SEGMENT_FEATURES,
}
