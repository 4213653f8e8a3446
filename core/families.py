"""The facts about each model family, in one table: its FeatureService, the fields of a result
that carry its score and its decision, and the label its quality is measured on.

    FAMILIES["fraud"].score_field      # "fraud_probability"
    NAMES                              # ("churn", "fraud", "segment")
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    feature_service: str  # what its current model version reads (feature_repo/services.py)
    score_field: str  # the result field the metrics, the inference log and shadow comparisons use
    decision_field: str  # the decision taken on the score
    label: str | None  # the labelled outcome its quality is measured on; None: no labels


FAMILIES = {family.name: family for family in (
    Family("churn", "churn_v1", "churn_probability", "risk_level", "churned"),
    Family("fraud", "fraud_v1", "fraud_probability", "is_fraud", "is_fraud"),
    Family("segment", "segment_v1", "segment_id", "segment_name", None),
)}
NAMES = tuple(FAMILIES)
