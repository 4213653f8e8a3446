"""Scoring logic of the three model families, free of BentoML and Feast.

Each scorer takes the model and the metadata stored with it in the registry (calibration,
risk cut-offs, threshold, segment names, feature list) and a feature reader, so it can be tested
with a five-line fake reader:

    class FakeReader:
        def read(self, service, rows):
            return {"days_since_last_txn": [3.0] * len(rows), ...}

A request is a dict: {"customer_id": ..., "features": {name: value} (overrides), and for fraud
"transaction": {...}}. A result is a dict; an unknown customer gets {"error": "unknown_customer"}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import xgboost as xgb

from monitoring.inference_log import FEATURES_KEY
from training.decisions import calibrate, risk_level
from training.realtime import OUTPUT_FEATURES as REQUEST_TIME_FEATURES

UNKNOWN_CUSTOMER = "unknown_customer"
INVALID_FEATURE = "invalid_feature"
UNKNOWN_VERSION = "unknown_version"


class FeatureReader(Protocol):
    def read(self, feature_service: str, rows: list[dict]) -> dict[str, list]:
        """Values of the service's features for each row (None where the store has nothing)."""


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
    values = reader.read(info.feature_service, rows)
    stored = [f for f in features if f not in REQUEST_TIME_FEATURES]
    matrix = np.full((len(requests), len(features)), np.nan)
    known = np.zeros(len(requests), dtype=bool)
    sources, invalid = [], []
    allowed = set(features) - (store_only or set())
    for i, request in enumerate(requests):
        overrides = request.get("features") or {}
        invalid.append(sorted(set(overrides) - allowed))
        known[i] = any(values[f][i] is not None for f in stored) if stored else True
        from_request, defaulted = [], []
        for j, name in enumerate(features):
            if name in overrides and name in allowed:
                matrix[i, j] = overrides[name]
                from_request.append(name)
                continue
            value = values[name][i]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                defaulted.append(name)
            else:
                matrix[i, j] = value
        sources.append({"request": from_request, "default": defaulted})
    return Assembled(matrix, known, invalid, sources)


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


class ChurnScorer:
    def __init__(self, booster: xgb.Booster, metadata: dict, info: ModelInfo, reader: FeatureReader, top_n: int = 5,
                 importance: dict[str, float] | None = None):
        self.booster, self.metadata, self.info, self.reader, self.top_n = booster, metadata, info, reader, top_n
        self.importance = importance or {}  # mean |SHAP| per feature on the test set at training
        self.features: list[str] = metadata["features"]

    def contributions(self, matrix: np.ndarray, exact: bool) -> np.ndarray:
        """Per-feature SHAP values (log-odds), without the bias column. The approximate kind
        (Saabas) is about a hundred times cheaper and is what the scoring routes return."""
        dmatrix = xgb.DMatrix(matrix, feature_names=self.features)
        return self.booster.predict(dmatrix, pred_contribs=True, approx_contribs=not exact)[:, :-1]

    def score(self, requests: list[dict], reasons: bool = True, keep_features: bool = False) -> list[dict]:
        a = assemble(self.reader, self.info, self.features, requests)
        probability = calibrate(self.booster.inplace_predict(a.matrix), self.metadata["calibration"])
        levels = risk_level(probability, self.metadata["risk_cutoffs"])
        contributions = self.contributions(a.matrix, exact=False) if reasons else None

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
        contributions = self.contributions(a.matrix, exact=True)[0]
        return {
            "customer_id": customer_id, "model": self.info.as_dict(), "kind": "shap_values",
            "values": [{"feature": f, "shap_value": float(c), "feature_value": None if math.isnan(v) else float(v)}
                       for f, c, v in zip(self.features, contributions, a.matrix[0])],
        }


class FraudScorer:
    def __init__(self, booster: xgb.Booster, metadata: dict, info: ModelInfo, reader: FeatureReader, top_n: int = 5):
        self.booster, self.metadata, self.info, self.reader, self.top_n = booster, metadata, info, reader, top_n
        self.features: list[str] = metadata["features"]
        self.threshold = float(metadata["threshold"])

    def score(self, requests: list[dict], keep_features: bool = False) -> list[dict]:
        # the on-demand features are computed by Feast from the request: they cannot be overridden
        a = assemble(self.reader, self.info, self.features, requests, store_only=set(REQUEST_TIME_FEATURES))
        probability = self.booster.inplace_predict(a.matrix)
        contributions = self.booster.predict(xgb.DMatrix(a.matrix, feature_names=self.features),
                                             pred_contribs=True, approx_contribs=True)[:, :-1]
        return row_results(a, requests, self.info, lambda i, customer_id: {
            "customer_id": customer_id, "fraud_probability": float(probability[i]),
            "is_fraud": bool(probability[i] >= self.threshold), "threshold": self.threshold, "model": self.info.as_dict(),
            "feature_sources": a.sources[i], "reasons": top_reasons(contributions[i], a.matrix[i], self.features, self.top_n),
        }, keep_features)


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
