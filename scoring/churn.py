"""Churn: the calibrated probability that a customer stops transacting, its risk level, and the
reasons (approximate contributions per score; exact SHAP values on `explain`).

    scorer = build(loaded, info, reader, top_reasons=5)
    scorer.score([{"customer_id": "C0000001"}])   # [{"churn_probability": ..., "risk_level": ..., "reasons": [...]}]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from core.decisions import calibrate, risk_level
from core.families import FAMILIES
from core.reasons import Explainer
from scoring.base import (
    FeatureReader,
    Freshness,
    ModelInfo,
    assemble,
    exact_contributions,
    in_booster_order,
    load_booster,
    request_error,
    row_results,
    tree_ensemble,
)

if TYPE_CHECKING:
    import xgboost as xgb

load_model = load_booster
ADVERSE = FAMILIES["churn"].adverse


class ChurnScorer:
    freshness: Freshness | None = None  # how old each feature view may be (the service sets it)

    def __init__(self, booster: xgb.Booster, metadata: dict, info: ModelInfo, reader: FeatureReader, top_n: int = 5,
                 importance: dict[str, float] | None = None):
        self.booster, self.metadata, self.info, self.reader, self.top_n = booster, metadata, info, reader, top_n
        self.importance = importance or {}  # mean |SHAP| per feature on the test set at training
        self.features: list[str] = metadata["features"]
        in_booster_order(booster, self.features)
        self.trees = tree_ensemble(booster)
        self.explainer = Explainer(self.features, metadata.get("typical"))

    def score(self, requests: list[dict], reasons: bool = True, keep_features: bool = False) -> list[dict]:
        """Reason codes are approximate contributions (Saabas): about a hundred times cheaper than
        exact SHAP values, which `explain` gives."""
        a = assemble(self.reader, self.info, self.features, requests, freshness=self.freshness)
        raw, contributions = self.trees.predict(a.matrix, contributions=reasons)
        probability = calibrate(raw, self.metadata["calibration"])
        levels = risk_level(probability, self.metadata["risk_cutoffs"])

        def scored(i: int, customer_id: str) -> dict:
            result = {"customer_id": customer_id, "churn_probability": float(probability[i]), "risk_level": str(levels[i]),
                      "model": self.info.as_dict(), "feature_sources": a.sources[i]}
            if reasons:
                result["reasons"] = self.explainer.top(contributions[i], a.matrix[i], self.top_n)
                result["principal_reasons"] = self.explainer.principal(contributions[i], a.matrix[i]) \
                    if result["risk_level"] in ADVERSE else []
            return result

        return row_results(a, requests, self.info, scored, keep_features)

    def explain(self, customer_id: str) -> dict:
        a = assemble(self.reader, self.info, self.features, [{"customer_id": customer_id}])
        if error := request_error(a, 0, customer_id, self.info):
            return error
        *contributions, base_value = exact_contributions(self.booster, a.matrix, bias=True)[0]
        return {
            "customer_id": customer_id, "model": self.info.as_dict(), "kind": "shap_values",
            # base_value plus every shap_value is this customer's log-odds before calibration
            "base_value": float(base_value),
            "values": [{"feature": f, "shap_value": float(c), "feature_value": None if math.isnan(v) else float(v)}
                       for f, c, v in zip(self.features, contributions, a.matrix[0])],
        }


def build(loaded, info: ModelInfo, reader: FeatureReader, top_reasons: int) -> ChurnScorer:
    return ChurnScorer(loaded.model, loaded.metadata, info, reader, top_reasons, loaded.importance)
