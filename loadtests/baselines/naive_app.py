"""The naive design, kept as a baseline for the benchmark: one FastAPI process per core that calls
Feast `get_online_features` and XGBoost once per request, without batching.

    DATA_DIR=data uvicorn loadtests.baselines.naive_app:app --port 3100 --workers 2

Same model (the churn champion from the BentoML store), same store, same features as the service.
"""

from __future__ import annotations

import os

import bentoml
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from bentos.loading import from_bento
from core.decisions import calibrate
from core.settings import get_settings
from core.store import open_store

app = FastAPI(title="naive churn baseline")
_model = bentoml.models.get(os.environ.get("CHURN_MODEL_TAG", "churn:latest"))
_loaded = from_bento(_model, "churn")
_info, _meta, _booster = _loaded.info("champion"), _loaded.metadata, _loaded.model
_store = open_store(get_settings())
_service = _store.get_feature_service(_info.feature_service)


class Request(BaseModel):
    customer_id: str


@app.post("/api/v1/inference/churn-score")
def churn_score(body: Request) -> dict:
    values = _store.get_online_features(features=_service, entity_rows=[{"customer_id": body.customer_id}]).to_dict()
    row = [[values[f][0] if values[f][0] is not None else float("nan") for f in _meta["features"]]]
    if all(values[f][0] is None for f in _meta["features"]):
        raise HTTPException(404, "unknown customer")
    probability = float(calibrate(_booster.inplace_predict(row), _meta["calibration"])[0])
    return {"customer_id": body.customer_id, "churn_probability": probability, "model": _info.as_dict()}
