"""Which features each model version reads: the FeatureServices in feature_repo/services.py are
built from these lists, and training orders its columns by them."""

from __future__ import annotations

from training.features import ACTIVITY_FEATURES, RISK_FEATURES, SPEND_MIX_FEATURES
from training.realtime import OUTPUT_FEATURES

CHURN_FEATURES = ACTIVITY_FEATURES + SPEND_MIX_FEATURES + [
    "avg_log_amount_365d", "night_share_90d", "distinct_countries_365d", "foreign_share_90d",
]
FRAUD_CUSTOMER_FEATURES = RISK_FEATURES + ["txn_count_7d", "txn_count_30d", "avg_amount_30d", "days_since_last_txn"]
FRAUD_FEATURES = FRAUD_CUSTOMER_FEATURES + OUTPUT_FEATURES
SEGMENT_FEATURES = [
    "days_since_last_txn", "txn_count_90d", "spend_90d", "avg_amount_90d",
    "share_groceries_90d", "share_dining_90d", "share_travel_90d", "share_online_retail_90d",
    "share_electronics_90d", "share_cash_90d", "share_online_90d", "share_mobile_90d",
]

FEATURE_SERVICES = {"churn": "churn_v1", "fraud": "fraud_v1", "segment": "segment_v1"}
