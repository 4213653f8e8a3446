"""Streaming features: the customer's last hour and last day of transactions, pushed by the stream
consumer (streaming/consumer.py) after every batch of events. Offline, the pipeline writes the
same features as of every transaction (core/stream_features.py, one definition for both).

A transaction being scored reads them through `transaction_recent_activity`, an on-demand view
over the stored row and the request: fraud_v2's features."""

from datetime import timedelta

from common import DATA_DIR, OWNER, customer
from feast import FeatureView, Field, FileSource, PushSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64
from fraud import transaction_request

from core.stream_features import BEFORE_FEATURES, STREAM_FEATURES

stream_features_source = FileSource(
    name="stream_features_source",
    path=str(DATA_DIR / "features" / "stream_features.parquet"),
    timestamp_field="event_timestamp",
    description="The streaming features as of every transaction, one row per transaction.",
    owner=OWNER,
)

customer_stream_push = PushSource(
    name="customer_stream_push",
    batch_source=stream_features_source,
    description="What the stream consumer computes, written straight to the online store.",
    owner=OWNER,
)

customer_stream = FeatureView(
    name="customer_stream",
    entities=[customer],
    # No TTL: online, Feast keeps a row however old; offline, the latest row before a transaction
    # whatever its age, the same. How old is too old is transaction_recent_activity's rule.
    ttl=timedelta(0),
    schema=[Field(name=name, dtype=Float64) for name in STREAM_FEATURES],
    source=customer_stream_push,
    online=True,
    description="Transactions and spend in the last hour and day, devices and countries in the last day, "
                "the gap since the previous transaction, the amount against the day's mean, as of the newest one.",
    owner=OWNER,
    tags={"domain": "fraud", "models": "fraud"},
)


@on_demand_feature_view(
    sources=[customer_stream, transaction_request],
    schema=[Field(name=name, dtype=Float64) for name in BEFORE_FEATURES],
    mode="python",
    description="The customer's last hour and day as they stood at its previous transaction, and how long "
                "before this one that was; nothing from a previous transaction more than a day back.",
    owner=OWNER,
    tags={"domain": "fraud", "models": "fraud"},
)
def transaction_recent_activity(inputs: dict) -> dict:
    # Feast rebuilds this function from its source text, without this module's imports.
    from core.stream_features import before

    return before(inputs)
