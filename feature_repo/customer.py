"""Customer feature views, grouped by what is read together."""

from common import FEATURE_TTL, OWNER, customer, customer_activity_push, customer_features_source
from feast import FeatureView, Field
from feast.types import Float64, String

from core.feature_sets import ACTIVITY_FEATURES, RISK_FEATURES, SPEND_MIX_FEATURES


def _floats(names: list[str]) -> list[Field]:
    return [Field(name=name, dtype=Float64) for name in names]


customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    ttl=FEATURE_TTL,
    schema=_floats(ACTIVITY_FEATURES),
    source=customer_activity_push,
    online=True,
    description="Recency, frequency, monetary value, trends and gaps between transactions.",
    owner=OWNER,
    tags={"domain": "customer", "models": "churn,segment,fraud"},
)

customer_spend_mix = FeatureView(
    name="customer_spend_mix",
    entities=[customer],
    ttl=FEATURE_TTL,
    schema=_floats(SPEND_MIX_FEATURES),
    source=customer_features_source,
    online=True,
    description="Where the money goes: spend share by merchant category, channel mix, variety.",
    owner=OWNER,
    tags={"domain": "customer", "models": "churn,segment"},
)

customer_risk_profile = FeatureView(
    name="customer_risk_profile",
    entities=[customer],
    ttl=FEATURE_TTL,
    schema=_floats(RISK_FEATURES) + [
        Field(name="home_country", dtype=String),
        Field(name="countries_seen", dtype=String),
        Field(name="devices_seen", dtype=String),
        Field(name="categories_seen", dtype=String),
    ],
    source=customer_features_source,
    online=True,
    description="The customer's norms: typical amounts, usual hours, countries and devices seen.",
    owner=OWNER,
    tags={"domain": "fraud", "models": "fraud,churn"},
)
