"""The naive design, kept as a baseline for the benchmark: one FastAPI process per core that calls
Feast `get_online_features` and XGBoost once per request, without batching, for churn-score and
fraud-detection.

    DATA_DIR=data uvicorn loadtests.baselines.naive_app:create_app --factory --port 3100 --workers 2

Same models (each family's version packed into the bento, as the service starts from), same store,
same FeatureServices and same request bodies as the service: fraud-detection takes the service's own
request schema (bentos/schemas.py), so the transaction's fields and its `transaction_time` reach
Feast's on-demand view as the service hands them to its reader. No reason codes, no inference log,
no metrics.
"""

from __future__ import annotations

import math
import os

import bentoml
import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from bentos.schemas import FraudRequest
from core.decisions import calibrate, fraud_outcome
from core.realtime import OUTPUT_FEATURES as REQUEST_TIME_FEATURES
from core.settings import get_settings
from core.store import open_store
from scoring.loading import LoadedVersion, from_bento


class ChurnRequest(BaseModel):
    customer_id: str


def create_app() -> FastAPI:
    """Both routes, each with its family's packed version; uvicorn calls this once per worker."""
    store = open_store(get_settings())
    app = FastAPI(title="naive churn and fraud baseline")
    app.post("/api/v1/inference/churn-score")(churn_route(store, packed("churn")))
    app.post("/api/v1/inference/fraud-detection")(fraud_route(store, packed("fraud")))
    return app


def packed(family: str) -> LoadedVersion:
    """The family's version in the BentoML store (CHURN_MODEL_TAG, FRAUD_MODEL_TAG; default <family>:latest)."""
    return from_bento(bentoml.models.get(os.environ.get(f"{family.upper()}_MODEL_TAG", f"{family}:latest")), family)


def feature_row(store, service, features: list[str], stored: list[str], entity_row: dict) -> list[list[float]]:
    """The model's features for one entity row, NaN where the store has none; 404 when it has none of `stored`."""
    values = store.get_online_features(features=service, entity_rows=[entity_row]).to_dict()
    if all(values[f][0] is None for f in stored):
        raise HTTPException(404, "unknown customer")
    return [[values[f][0] if values[f][0] is not None else math.nan for f in features]]


def churn_route(store, loaded: LoadedVersion):
    info, meta, booster = loaded.info("champion"), loaded.metadata, loaded.model
    service = store.get_feature_service(info.feature_service)

    def churn_score(body: ChurnRequest) -> dict:
        row = feature_row(store, service, meta["features"], meta["features"], {"customer_id": body.customer_id})
        probability = float(calibrate(booster.inplace_predict(row), meta["calibration"])[0])
        return {"customer_id": body.customer_id, "churn_probability": probability, "model": info.as_dict()}

    return churn_score


def fraud_route(store, loaded: LoadedVersion):
    info, meta, booster = loaded.info("champion"), loaded.metadata, loaded.model
    service = store.get_feature_service(info.feature_service)
    thresholds = meta["outcome_thresholds"]
    # the request-time features always have a value: a customer is known by the stored ones
    stored = [f for f in meta["features"] if f not in REQUEST_TIME_FEATURES]

    def fraud_detection(body: FraudRequest) -> dict:
        entity_row = {"customer_id": body.customer_id, **body.transaction.request_data()}
        raw = booster.inplace_predict(feature_row(store, service, meta["features"], stored, entity_row))
        probability = float(calibrate(raw, meta["calibration"])[0])
        outcome = str(fraud_outcome(np.array([probability]), thresholds)[0])
        return {"customer_id": body.customer_id, "fraud_probability": probability, "outcome": outcome,
                "threshold": thresholds["review"], "model": info.as_dict()}

    return fraud_detection
