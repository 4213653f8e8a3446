"""Streaming features: the customer's last hour and last day of transactions, pushed by the stream
consumer (streaming/consumer.py) after every batch of events. Offline, the pipeline writes the
same features as of every transaction (core/stream_features.py, one definition for both)."""

from datetime import timedelta

from common import DATA_DIR, OWNER, customer
from feast import FeatureView, Field, FileSource, PushSource
from feast.types import Float64

from core.stream_features import STREAM_FEATURES

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
    ttl=timedelta(days=1),  # a day without a transaction leaves none of these windows anything to say
    schema=[Field(name=name, dtype=Float64) for name in STREAM_FEATURES],
    source=customer_stream_push,
    online=True,
    description="Transactions and spend in the last hour and day, devices and countries in the last day, "
                "the gap since the previous transaction, the amount against the day's mean.",
    owner=OWNER,
    tags={"domain": "fraud", "models": "fraud"},
)
