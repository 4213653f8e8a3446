"""Bulk histogram observations land exactly where one-by-one observations land."""

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from bentos.metrics import LATENCY_BUCKETS, observe_many


def samples(histogram: Histogram) -> dict:
    return {(s.name, s.labels.get("le")): s.value for metric in histogram.collect() for s in metric.samples
            if not s.name.endswith("_created")}


def test_observing_a_batch_at_once_equals_observing_it_value_by_value():
    registry = CollectorRegistry()
    one, many = (Histogram(name, "test", ["model"], buckets=LATENCY_BUCKETS, registry=registry) for name in ("one", "many"))
    values = np.concatenate([np.random.default_rng(0).exponential(0.05, 500),
                             LATENCY_BUCKETS, [0.0, -1.0, 11.0, 1e9]])  # on each bound, below all, above all
    for value in values:
        one.labels("churn").observe(value)
    observe_many(many.labels("churn"), values)
    observe_many(many.labels("churn"), [])
    expected = {(name.replace("one", "many"), le): value for (name, le), value in samples(one).items()}
    assert samples(many) == expected
