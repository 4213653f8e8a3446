"""Fraud: the probability that a card transaction is fraudulent, the decision at the version's
threshold, and the reasons. The transaction's own features (core/realtime.py) come from the
request through the reader and cannot be overridden.

    scorer = build(loaded, info, reader, top_reasons=5)
    scorer.score([{"customer_id": "C0000001", "request_data": {"amount": 39.3, ...}}])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.families import FAMILIES
from core.realtime import OUTPUT_FEATURES
from core.reasons import Explainer
from scoring.base import (
    FeatureReader,
    ModelInfo,
    assemble,
    in_booster_order,
    load_booster,
    row_results,
    tree_ensemble,
)

if TYPE_CHECKING:
    import xgboost as xgb

load_model = load_booster
ADVERSE = FAMILIES["fraud"].adverse
# computed by Feast's on-demand view from the request: a request cannot override them
REQUEST_TIME_FEATURES = frozenset(OUTPUT_FEATURES)


class FraudScorer:
    def __init__(self, booster: xgb.Booster, metadata: dict, info: ModelInfo, reader: FeatureReader, top_n: int = 5):
        self.booster, self.metadata, self.info, self.reader, self.top_n = booster, metadata, info, reader, top_n
        self.features: list[str] = metadata["features"]
        self.threshold = float(metadata["threshold"])
        in_booster_order(booster, self.features)
        self.trees = tree_ensemble(booster)
        self.explainer = Explainer(self.features, metadata.get("typical"))

    def score(self, requests: list[dict], reasons: bool = True, keep_features: bool = False) -> list[dict]:
        a = assemble(self.reader, self.info, self.features, requests, store_only=REQUEST_TIME_FEATURES)
        probability, contributions = self.trees.predict(a.matrix, contributions=reasons)

        def scored(i: int, customer_id: str) -> dict:
            result = {"customer_id": customer_id, "fraud_probability": float(probability[i]),
                      "is_fraud": bool(probability[i] >= self.threshold), "threshold": self.threshold,
                      "model": self.info.as_dict(), "feature_sources": a.sources[i]}
            if reasons:
                result["reasons"] = self.explainer.top(contributions[i], a.matrix[i], self.top_n)
                result["principal_reasons"] = self.explainer.principal(contributions[i], a.matrix[i]) \
                    if result["is_fraud"] in ADVERSE else []
            return result

        return row_results(a, requests, self.info, scored, keep_features)


def build(loaded, info: ModelInfo, reader: FeatureReader, top_reasons: int) -> FraudScorer:
    return FraudScorer(loaded.model, loaded.metadata, info, reader, top_reasons)
