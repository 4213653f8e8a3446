"""The facts about each model family, in one table: its FeatureService, what one scored row is, how
a version is stored, the fields of a result that carry its score and its decision, and the label
its quality is measured on. Code that differs by family asks this table (or the family's scorer
module, scoring/<family>.py), never the family's name.

    FAMILIES["fraud"].score_field      # "fraud_probability"
    FAMILIES["fraud"].decision_field   # "outcome": accept, review or block
    FAMILIES["fraud"].rows             # "transaction"
    NAMES                              # ("churn", "fraud", "segment")
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    feature_service: str  # what its first model version reads (feature_repo/services.py); later ones name theirs
    score_field: str  # the result field the metrics, the inference log and shadow comparisons use
    decision_field: str  # the decision taken on the score
    label: str | None  # the labelled outcome its quality is measured on; None: no labels
    rows: str  # what one scored row is: "customer" (a snapshot of one) or "transaction" (one card payment)
    flavour: str  # how a version is logged in MLflow: "xgboost" (a booster) or "sklearn" (a pipeline)
    categorical: bool = False  # the score is a category (a segment id), not a probability
    importance: bool = False  # each version carries a mean |SHAP| table (global importance, explain)
    calibrated: bool = False  # the score is calibrated: each version carries its calibration curve
    alternatives: tuple[str, ...] = ()  # other FeatureServices a later version may read (`rollout choose`, canaries)
    adverse: tuple = ()  # the decisions adverse to the customer: they carry principal reasons (core/reasons.py)

    @property
    def feature_services(self) -> tuple[str, ...]:
        """Every FeatureService a version of it may read, its first one first."""
        return (self.feature_service, *self.alternatives)

    @property
    def scorer_module(self) -> str:
        """The module that loads its versions' models and scores them."""
        return f"scoring.{self.name}"


FAMILIES = {family.name: family for family in (
    Family("churn", "churn_v1", "churn_probability", "risk_level", "churned", rows="customer", flavour="xgboost",
           importance=True, calibrated=True, adverse=("high", "critical")),
    Family("fraud", "fraud_v1", "fraud_probability", "outcome", "is_fraud", rows="transaction", flavour="xgboost",
           calibrated=True, alternatives=("fraud_v2",), adverse=("review", "block")),
    Family("segment", "segment_v1", "segment_id", "segment_name", None, rows="customer", flavour="sklearn",
           categorical=True),
)}
NAMES = tuple(FAMILIES)
