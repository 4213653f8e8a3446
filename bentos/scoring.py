"""Scoring logic of the three model families, free of BentoML and Feast.

Each scorer takes the model and the metadata stored with it in the registry (calibration,
risk cut-offs, threshold, segment names, feature list) and a feature reader, so it can be tested
with a five-line fake reader:

    class FakeReader:
        def read(self, service, rows):
            return OnlineFeatures.from_columns({"days_since_last_txn": [3.0] * len(rows), ...}, stored=[...])

A request is a dict: {"customer_id": ..., "features": {name: value} (overrides), and for fraud
"request_data": the transaction's fields}. A result is a dict; an unknown customer gets {"error": "unknown_customer"}.

XGBoost and the compiled tree walk (bentos/trees.py) are imported when a scorer is built, not
with this module: the `bentoml serve` process that only reads the service's definition (and then
starts the workers) never needs them, and a server starts about 4 s sooner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from core.decisions import calibrate, risk_level
from core.realtime import OUTPUT_FEATURES as REQUEST_TIME_FEATURES
from monitoring.inference_log import FEATURES_KEY

if TYPE_CHECKING:
    import xgboost as xgb

UNKNOWN_CUSTOMER = "unknown_customer"
INVALID_FEATURE = "invalid_feature"
UNKNOWN_VERSION = "unknown_version"


@dataclass
class OnlineFeatures:
    """What the store holds for a batch of rows, one position per row."""

    values: dict[str, np.ndarray | list]  # per feature: floats (NaN: no value), or Python values (None: no value);
    # per feature view, `<view>__ts`: its event time in epoch seconds (0: none)
    found: np.ndarray  # bool per row: the store knows the customer

    @classmethod
    def from_columns(cls, values: dict[str, list], stored: list[str]) -> OnlineFeatures:
        """From lists with None where the store has nothing: a row is found when any stored feature has a value."""
        n = len(next(iter(values.values()))) if values else 0
        found = np.array([any(values[name][i] is not None for name in stored) for i in range(n)], dtype=bool)
        return cls(values, found if stored else np.ones(n, dtype=bool))


class StoreUnavailable(Exception):
    """The online store did not answer a read: down, unreachable, or slower than the timeout."""


class FeaturesUnreadable(Exception):
    """The online store answered, but refused the read of one FeatureService (SQLite: a view's table
    is not there). Only the versions that read that service fail; the store is not down."""


class FeatureReader(Protocol):
    def read(self, feature_service: str, rows: list[dict]) -> OnlineFeatures:
        """The service's features for each row, and whether the store knows each row's customer."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str  # registry version
    role: str  # champion or challenger: the registry alias it is served under
    feature_service: str

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "role": self.role, "feature_service": self.feature_service}


@dataclass
class Assembled:
    matrix: np.ndarray  # rows x features, NaN where a default (the model's missing-value branch) applies
    known: np.ndarray  # bool per row: the store knows the customer
    invalid: list[list[str]]  # per row: override names the model does not have (or may not override)
    sources: list[dict[str, list[str]]]  # per row: {"request": [...], "default": [...]} (the rest: store)


def assemble(reader: FeatureReader, info: ModelInfo, features: list[str], requests: list[dict],
             store_only: set[str] | None = None) -> Assembled:
    """One store read for the whole batch; request overrides win; missing values become NaN.

    A customer is unknown when the store has none of the stored features for it."""
    rows = [{"customer_id": r["customer_id"], **r.get("request_data", {})} for r in requests]
    read = reader.read(info.feature_service, rows)
    matrix = np.column_stack([as_floats(read.values[name]) for name in features]) if requests else np.empty((0, len(features)))
    defaulted = np.isnan(matrix)
    allowed = set(features) - (store_only or set())
    column = {name: j for j, name in enumerate(features)}
    invalid: list[list[str]] = [[] for _ in requests]
    from_request: list[list[str]] = [[] for _ in requests]
    for i, request in enumerate(requests):
        if overrides := request.get("features"):
            invalid[i] = sorted(set(overrides) - allowed)
            from_request[i] = [name for name in features if name in overrides and name in allowed]
            for name in from_request[i]:
                matrix[i, column[name]] = overrides[name]
                defaulted[i, column[name]] = False
    some_default = defaulted.any(axis=1)
    sources = [{"request": from_request[i], "default": [features[j] for j in np.flatnonzero(defaulted[i])] if some_default[i] else []}
               for i in range(len(requests))]
    return Assembled(matrix, np.asarray(read.found, dtype=bool), invalid, sources)


def as_floats(column: np.ndarray | list) -> np.ndarray:
    """A feature column as floats, NaN where the store had no value."""
    if isinstance(column, np.ndarray) and column.dtype == np.float64:
        return column
    return np.array([np.nan if value is None else value for value in column], dtype=float)


def request_error(a: Assembled, i: int, customer_id: str, info: ModelInfo) -> dict | None:
    """The error result of row i, if the row cannot be scored (naming the version that was asked)."""
    if a.invalid[i]:
        return {"customer_id": customer_id, "error": INVALID_FEATURE, "fields": [f"features.{n}" for n in a.invalid[i]],
                "model": info.as_dict()}
    if not a.known[i]:
        return {"customer_id": customer_id, "error": UNKNOWN_CUSTOMER, "model": info.as_dict()}
    return None


def row_results(a: Assembled, requests: list[dict], info: ModelInfo, scored, keep_features: bool) -> list[dict]:
    """Each row's result: its error, or `scored(i, customer_id)`, with the row's feature vector
    (NaN where a default applied) for the inference log when asked to keep it."""
    results = []
    for i, request in enumerate(requests):
        if error := request_error(a, i, request["customer_id"], info):
            results.append(error)
            continue
        result = scored(i, request["customer_id"])
        if keep_features:
            result[FEATURES_KEY] = a.matrix[i]
        results.append(result)
    return results


def in_booster_order(booster: xgb.Booster, features: list[str]) -> None:
    """Refuse a model whose features are not the stored feature list, in order: the scorers hand
    XGBoost bare matrices, whose columns are that list."""
    if booster.feature_names and list(booster.feature_names) != list(features):
        raise ValueError(f"the booster's features {booster.feature_names} are not the model's feature list {features}")


def exact_contributions(booster: xgb.Booster, matrix: np.ndarray, bias: bool = False) -> np.ndarray:
    """Each feature's SHAP value (log-odds; the bias, the model's mean output, as a last column when
    `bias`), from XGBoost's TreeSHAP on one thread: with its default (every core), OpenMP's idle
    threads spin on the cores the event loop needs."""
    import xgboost as xgb

    contributions = booster.predict(xgb.DMatrix(matrix, nthread=1), pred_contribs=True, validate_features=False)
    return contributions if bias else contributions[:, :-1]


def top_reasons(contributions: np.ndarray, values: np.ndarray, features: list[str], n: int) -> list[dict]:
    """The n features that moved this score most, with their contribution (log-odds) and value."""
    order = np.argsort(-np.abs(contributions))[:n]
    return [
        {
            "feature": features[j],
            "shap_value": float(contributions[j]),
            "feature_value": None if math.isnan(values[j]) else float(values[j]),
            "direction": "increases risk" if contributions[j] > 0 else "decreases risk",
        }
        for j in order
    ]


def tree_ensemble(booster: xgb.Booster):
    from bentos.trees import TreeEnsemble

    return TreeEnsemble.from_booster(booster)


class ChurnScorer:
    def __init__(self, booster: xgb.Booster, metadata: dict, info: ModelInfo, reader: FeatureReader, top_n: int = 5,
                 importance: dict[str, float] | None = None):
        self.booster, self.metadata, self.info, self.reader, self.top_n = booster, metadata, info, reader, top_n
        self.importance = importance or {}  # mean |SHAP| per feature on the test set at training
        self.features: list[str] = metadata["features"]
        in_booster_order(booster, self.features)
        self.trees = tree_ensemble(booster)

    def score(self, requests: list[dict], reasons: bool = True, keep_features: bool = False) -> list[dict]:
        """Reason codes are approximate contributions (Saabas): about a hundred times cheaper than
        exact SHAP values, which `explain` gives."""
        a = assemble(self.reader, self.info, self.features, requests)
        raw, contributions = self.trees.predict(a.matrix, contributions=reasons)
        probability = calibrate(raw, self.metadata["calibration"])
        levels = risk_level(probability, self.metadata["risk_cutoffs"])

        def scored(i: int, customer_id: str) -> dict:
            result = {"customer_id": customer_id, "churn_probability": float(probability[i]), "risk_level": str(levels[i]),
                      "model": self.info.as_dict(), "feature_sources": a.sources[i]}
            if reasons:
                result["reasons"] = top_reasons(contributions[i], a.matrix[i], self.features, self.top_n)
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


class FraudScorer:
    def __init__(self, booster: xgb.Booster, metadata: dict, info: ModelInfo, reader: FeatureReader, top_n: int = 5):
        self.booster, self.metadata, self.info, self.reader, self.top_n = booster, metadata, info, reader, top_n
        self.features: list[str] = metadata["features"]
        self.threshold = float(metadata["threshold"])
        in_booster_order(booster, self.features)
        self.trees = tree_ensemble(booster)

    def score(self, requests: list[dict], keep_features: bool = False) -> list[dict]:
        # the on-demand features are computed by Feast from the request: they cannot be overridden
        a = assemble(self.reader, self.info, self.features, requests, store_only=set(REQUEST_TIME_FEATURES))
        probability, contributions = self.trees.predict(a.matrix, contributions=True)
        return row_results(a, requests, self.info, lambda i, customer_id: {
            "customer_id": customer_id, "fraud_probability": float(probability[i]),
            "is_fraud": bool(probability[i] >= self.threshold), "threshold": self.threshold, "model": self.info.as_dict(),
            "feature_sources": a.sources[i], "reasons": top_reasons(contributions[i], a.matrix[i], self.features, self.top_n),
        }, keep_features)


class SegmentCentres:
    """The segment model as the service runs it: numbers from the version's metadata, never a
    pickle (a registry that could be written to would otherwise run code in every serving pod).
    A customer's segment is the nearest centre after log1p and scaling, as the fitted pipeline's
    k-means assigns it (training/models.py `segment_model`; a model test holds the two equal)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, centres: np.ndarray):
        self.mean, self.scale, self.centres = mean, scale, centres

    @classmethod
    def from_metadata(cls, stored: dict) -> SegmentCentres:
        if stored.get("transform") != "log1p":
            raise ValueError(f"unknown segment transform {stored.get('transform')!r}")
        try:
            mean, scale = np.asarray(stored["mean"], float), np.asarray(stored["scale"], float)
            centres = np.asarray(stored["centres"], float)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"the segment centres are not tables of numbers: {e}") from e
        if centres.ndim != 2 or mean.shape != scale.shape or centres.shape[1:] != mean.shape or not len(centres):
            raise ValueError(f"segment centres of shape {centres.shape} do not fit {mean.shape[0]} features")
        return cls(mean, scale, centres)

    def predict(self, frame) -> np.ndarray:
        scaled = (np.log1p(np.asarray(frame, float)) - self.mean) / self.scale
        distances = ((scaled[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)
        return distances.argmin(axis=1)


class SegmentScorer:
    def __init__(self, pipeline, metadata: dict, info: ModelInfo, reader: FeatureReader):
        self.pipeline, self.metadata, self.info, self.reader = pipeline, metadata, info, reader
        self.features: list[str] = metadata["features"]
        self.names: dict[str, str] = metadata["segment_names"]

    def score(self, requests: list[dict], keep_features: bool = False) -> list[dict]:
        import pandas as pd

        a = assemble(self.reader, self.info, self.features, requests)
        # k-means has no missing-value branch: a feature the store lacks counts as zero activity
        frame = pd.DataFrame(np.nan_to_num(a.matrix, nan=0.0), columns=self.features)
        segments = self.pipeline.predict(frame) if len(frame) else []
        return row_results(a, requests, self.info, lambda i, customer_id: {
            "customer_id": customer_id, "segment_id": int(segments[i]), "segment_name": self.names[str(int(segments[i]))],
            "model": self.info.as_dict(), "feature_sources": a.sources[i],
        }, keep_features)


def build_scorer(loaded, info: ModelInfo, reader: FeatureReader, top_reasons: int):
    """The scorer of a loaded version (bentos/loading.py): what each family's model needs beside the features."""
    if loaded.family == "churn":
        return ChurnScorer(loaded.model, loaded.metadata, info, reader, top_reasons, loaded.importance)
    if loaded.family == "fraud":
        return FraudScorer(loaded.model, loaded.metadata, info, reader, top_reasons)
    return SegmentScorer(loaded.model, loaded.metadata, info, reader)
