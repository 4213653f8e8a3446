"""Request-time features of a transaction, computed by Feast from the request and the customer's
risk profile with the same code for training and serving (core/realtime.py)."""

from common import OWNER
from customer import customer_risk_profile
from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

from core.realtime import OUTPUT_FEATURES

transaction_request = RequestSource(
    name="transaction_request",
    schema=[
        Field(name="amount", dtype=Float64),
        Field(name="merchant_category", dtype=String),
        Field(name="channel", dtype=String),
        Field(name="country", dtype=String),
        Field(name="device_id", dtype=String),
        Field(name="transaction_time", dtype=Int64),
    ],
    description="The transaction being scored; transaction_time is Unix seconds (UTC).",
    owner=OWNER,
)

_INTEGER_OUTPUTS = {"is_night", "is_foreign", "is_new_country", "is_new_device", "is_new_category",
                    "category_index", "channel_index"}


@on_demand_feature_view(
    sources=[customer_risk_profile, transaction_request],
    schema=[Field(name=name, dtype=Int64 if name in _INTEGER_OUTPUTS else Float64) for name in OUTPUT_FEATURES],
    mode="python",
    description="How unusual the transaction is for this customer: amount, hour, country, device, category.",
    owner=OWNER,
    tags={"domain": "fraud", "models": "fraud"},
)
def transaction_context(inputs: dict) -> dict:
    # Feast rebuilds this function from its source text, without this module's imports.
    from core.realtime import transaction_features

    return transaction_features(inputs)
