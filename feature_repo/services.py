"""One FeatureService per model version: the exact features that version was trained on."""

from common import OWNER
from customer import customer_activity, customer_risk_profile, customer_spend_mix
from feast import FeatureService
from fraud import transaction_context
from stream import transaction_recent_activity

from core.feature_sets import CHURN_FEATURES, FRAUD_CUSTOMER_FEATURES, SEGMENT_FEATURES


def _select(view, wanted: list[str]):
    names = [field.name for field in view.features]
    return view[[name for name in names if name in wanted]]


def _views_for(wanted: list[str]) -> list:
    views = [customer_activity, customer_spend_mix, customer_risk_profile]
    return [_select(v, wanted) for v in views if any(f.name in wanted for f in v.features)]


churn_v1 = FeatureService(
    name="churn_v1",
    features=_views_for(CHURN_FEATURES),
    description="Features of churn model v1: activity, spend mix and a few risk norms.",
    owner=OWNER,
    tags={"model": "churn", "version": "1"},
)

fraud_v1 = FeatureService(
    name="fraud_v1",
    features=_views_for(FRAUD_CUSTOMER_FEATURES) + [transaction_context],
    description="Features of fraud model v1: customer norms and the transaction's request-time features.",
    owner=OWNER,
    tags={"model": "fraud", "version": "1"},
)

fraud_v2 = FeatureService(
    name="fraud_v2",
    features=_views_for(FRAUD_CUSTOMER_FEATURES) + [transaction_context, transaction_recent_activity],
    description="Features of fraud model v2: v1's, and what the transaction stream says of the customer's last "
                "hour and day before this transaction.",
    owner=OWNER,
    tags={"model": "fraud", "version": "2"},
)

segment_v1 = FeatureService(
    name="segment_v1",
    features=_views_for(SEGMENT_FEATURES),
    description="Features of segmentation model v1: value, activity and spend mix.",
    owner=OWNER,
    tags={"model": "segment", "version": "1"},
)
