"""Fraud: the calibrated probability that a card transaction is fraudulent, the outcome (accept,
review or block) at the version's two thresholds raised by any fraud rule that hits (core/rules.py),
and the reasons. The transaction's own features (core/realtime.py) come from the request through
the reader and cannot be overridden.

    scorer = build(loaded, info, reader, top_reasons=5)
    scorer.use_rules(load_rules())          # the service does; offline scoring (replay) does not
    scorer.score([{"customer_id": "C0000001", "request_data": {"amount": 39.3, ...}}])

A version registered before calibration and outcomes existed serves as it was trained: its raw
probability, review and block both at its one threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.decisions import calibrate, fraud_outcome, severest
from core.families import FAMILIES
from core.realtime import OUTPUT_FEATURES
from core.reasons import Explainer
from core.rules import Rules
from scoring.base import (
    FeatureReader,
    Freshness,
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
    freshness: Freshness | None = None  # how old each feature view may be (the service sets it)

    def __init__(self, booster: xgb.Booster, metadata: dict, info: ModelInfo, reader: FeatureReader, top_n: int = 5):
        self.booster, self.metadata, self.info, self.reader, self.top_n = booster, metadata, info, reader, top_n
        self.features: list[str] = metadata["features"]
        self.calibration = metadata.get("calibration")
        one = float(metadata["threshold"])
        self.thresholds = {name: float(t) for name, t in metadata.get("outcome_thresholds", {"review": one, "block": one}).items()}
        in_booster_order(booster, self.features)
        self.trees = tree_ensemble(booster)
        self.explainer = Explainer(self.features, metadata.get("typical"))
        self.rules: Rules | None = None
        self._check = None

    def use_rules(self, rules: Rules) -> None:
        """Check each transaction against `rules` before its outcome stands."""
        self.rules, self._check = rules, rules.checker(self.features)

    def score(self, requests: list[dict], reasons: bool = True, keep_features: bool = False) -> list[dict]:
        a = assemble(self.reader, self.info, self.features, requests, store_only=REQUEST_TIME_FEATURES, freshness=self.freshness)
        review_stale = a.policy == "review"
        raw, contributions = self.trees.predict(a.matrix, contributions=reasons)
        probability = calibrate(raw, self.calibration) if self.calibration else raw
        outcomes = fraud_outcome(probability, self.thresholds)
        check = self._check

        def scored(i: int, customer_id: str) -> dict:
            outcome = str(outcomes[i])
            hits = check(customer_id, requests[i].get("request_data", {}), a.matrix[i]) if check else []
            if hits:
                outcome = severest([outcome, *(rule.outcome for rule in hits)])
            if review_stale and a.stale[i]:  # a stale view's features are not trusted to accept on
                outcome = severest([outcome, "review"])
            result = {"customer_id": customer_id, "fraud_probability": float(probability[i]), "outcome": outcome,
                      "is_fraud": outcome in ADVERSE, "threshold": self.thresholds["review"],
                      "block_threshold": self.thresholds["block"], "rules": [rule.as_dict() for rule in hits],
                      "model": self.info.as_dict(), "feature_sources": a.sources[i]}
            if reasons:
                result["reasons"] = self.explainer.top(contributions[i], a.matrix[i], self.top_n)
                result["principal_reasons"] = self.explainer.principal(contributions[i], a.matrix[i]) \
                    if outcome in ADVERSE else []
            return result

        return row_results(a, requests, self.info, scored, keep_features)


def build(loaded, info: ModelInfo, reader: FeatureReader, top_reasons: int) -> FraudScorer:
    return FraudScorer(loaded.model, loaded.metadata, info, reader, top_reasons)
