"""The customer entity and the sources every customer feature view reads.

The offline source is the feature table the pipeline writes (training/features.py), one row per
customer and snapshot. Its path follows $DATA_DIR, as feature_store.yaml does.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FileSource, PushSource, ValueType

OWNER = "ml-platform@example.com"
DATA_DIR = Path(os.environ.get("DATA_DIR", Path(__file__).resolve().parent.parent / "data")).resolve()
# Snapshots are 30 days apart: a training row may use the latest one up to this old.
FEATURE_TTL = timedelta(days=45)

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A retail banking customer.",
    owner=OWNER,
)

customer_features_source = FileSource(
    name="customer_features_source",
    path=str(DATA_DIR / "features" / "customer_features.parquet"),
    timestamp_field="event_timestamp",
    description="Point-in-time customer features, one row per customer and snapshot.",
    owner=OWNER,
)

customer_activity_push = PushSource(
    name="customer_activity_push",
    batch_source=customer_features_source,
    description="Fresh activity aggregates written straight to the online store, without re-materializing.",
    owner=OWNER,
)
