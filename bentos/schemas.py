"""Request and response bodies of the HTTP API (pydantic): what the OpenAPI docs show."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from core.schema import CHANNELS, MERCHANT_CATEGORIES

CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# Greater than 0, published as `minimum: 0` and `not: {enum: [0]}`: pydantic writes gt=0 as a
# numeric `exclusiveMinimum` (JSON Schema 2020-12, OpenAPI 3.1), but BentoML's /docs.json embeds these
# schemas in an OpenAPI 3.0 document, where `exclusiveMinimum` is a boolean, and readers of it
# (schema fuzzers, client generators) refused the whole fraud-detection operation. This form means
# the same in both versions.
Amount = Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False),
                   WithJsonSchema({"type": "number", "minimum": 0, "not": {"enum": [0]}, "maximum": 1e9})]
Overrides = Annotated[dict[FeatureName, FiniteFloat] | None, Field(
    default=None, max_length=100, description="Feature values that replace the stored ones for this request.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerRequest(Strict):
    customer_id: CustomerId
    features: Overrides = None


class ChurnBatchRequest(Strict):
    customer_ids: list[CustomerId] = Field(min_length=1, description="Up to 10,000 customer ids.")


class Transaction(Strict):
    amount: Amount
    merchant_category: Literal[MERCHANT_CATEGORIES]  # type: ignore[valid-type]
    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    device_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    timestamp: datetime | None = Field(None, description="When it happened; default now. Naive times are UTC.")

    def request_data(self) -> dict:
        when = self.timestamp or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return {"amount": self.amount, "merchant_category": self.merchant_category, "channel": self.channel,
                "country": self.country, "device_id": self.device_id, "transaction_time": int(when.timestamp())}


class FraudRequest(Strict):
    customer_id: CustomerId
    transaction: Transaction


class ModelRef(BaseModel):
    name: str
    version: str = Field(description="Registry version that answered.")
    role: Literal["champion", "challenger"] = Field(description="The registry alias it answered under.")
    feature_service: str


class FeatureSources(BaseModel):
    request: list[str] = Field(description="Features whose value came from the request.")
    default: list[str] = Field(description="Features the store had no value for (the model's missing-value branch).")
    store: str = "every other feature came from the online store"


PRINCIPAL = ("An adverse decision's principal reasons (churn: risk level high or critical; fraud: review or block): the "
             "features that raised the score most, at most four, largest first. Empty for any other decision.")


AGES = ("How old each feature view read is, in seconds (now less its stored event time; the stream's view: less the "
        "consumer's last drained read); null for a view with no row, and for every view of a request scored as given.")
STALE = "The views older than the family's maximum age for them (SERVING_<FAMILY>__MAX_AGE_S); empty when none is."


class Reason(BaseModel):
    """Why a score is what it is. The feature's value is not given here: a customer's stored values
    are read through explain, which needs the `explain` scope and is recorded."""
    feature: str
    code: str | None = Field(description="The feature's reason code (core/reason_codes.toml); null for a feature "
                                         "the catalogue does not have.")
    sentence: str | None = Field(description="What the reason means for the customer: which side of typical their "
                                             "value is on. Null for a version registered without typical values.")
    shap_value: float = Field(description="Contribution to the score in log-odds (approximate SHAP).")
    direction: Literal["increases risk", "decreases risk"]


class ChurnScore(BaseModel):
    customer_id: str
    churn_probability: float
    risk_level: Literal["low", "medium", "high", "critical"]
    model: ModelRef
    feature_sources: FeatureSources
    reasons: list[Reason] = []
    principal_reasons: list[Reason] = Field([], description=PRINCIPAL)
    feature_age_s: dict[str, float | None] = Field({}, description=AGES)
    stale_views: list[str] = Field([], description=STALE)


class ChurnBatchItem(BaseModel):
    customer_id: str
    churn_probability: float | None = None
    risk_level: str | None = None
    version: str | None = Field(None, description="Registry version that scored this customer (see `models`).")
    error: str | None = Field(None, description=(
        "'unknown_customer' when the store does not know the id; 'stale_features' when a view is older than the "
        "service accepts (stale policy refuse)."))
    stale_views: list[str] = Field([], description=STALE)


class ChurnBatchResponse(BaseModel):
    models: list[ModelRef] = Field(description="The versions that answered: two during a canary.")
    count: int
    unknown: int = Field(description="Ids the store does not know.")
    results: list[ChurnBatchItem]


class RuleHit(BaseModel):
    """A fraud rule the transaction met (core/fraud_rules.toml): it raised the outcome to its own."""
    rule: str
    code: str
    outcome: Literal["review", "block"]
    sentence: str


class FraudScore(BaseModel):
    customer_id: str
    fraud_probability: float = Field(description="Calibrated: of transactions scored p, about p are fraudulent.")
    outcome: Literal["accept", "review", "block"] = Field(description=(
        "accept below `threshold`, review from it, block from `block_threshold` (both chosen at training from the "
        "stated costs of a missed fraud, a review and a blocked good customer); a rule in `rules` may raise it."))
    is_fraud: bool = Field(description="The outcome is review or block: the transaction is not accepted as it is.")
    threshold: float = Field(description="The version's review threshold on fraud_probability.")
    block_threshold: float = Field(description="The version's block threshold on fraud_probability.")
    rules: list[RuleHit] = Field([], description="The fraud rules the transaction met, each with the outcome it set.")
    model: ModelRef
    feature_sources: FeatureSources
    reasons: list[Reason]
    principal_reasons: list[Reason] = Field([], description=PRINCIPAL)
    feature_age_s: dict[str, float | None] = Field({}, description=AGES)
    stale_views: list[str] = Field([], description=STALE)


class SegmentResult(BaseModel):
    customer_id: str
    segment_id: int
    segment_name: str
    model: ModelRef
    feature_sources: FeatureSources
    feature_age_s: dict[str, float | None] = Field({}, description=AGES)
    stale_views: list[str] = Field([], description=STALE)


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str
    detail: str
    fields: list[FieldError] = []


class ReloadRequest(BaseModel):
    reason: str = Field("", max_length=200, description="Why, for the audit log (the rollout CLI names its step).")
