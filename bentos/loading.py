"""Load a model family from the BentoML model store (imported by bentos/import_models.py)."""

from __future__ import annotations

import json
from pathlib import Path

from bentos.scoring import ModelInfo

MLFLOW_FOLDER = "mlflow_model"


def model_info(bento_model, family: str) -> tuple[ModelInfo, dict]:
    """The registry identity of an imported model and the metadata stored with it at training."""
    meta = bento_model.info.metadata
    stored = json.loads(meta["model_metadata"])
    return ModelInfo(family, str(meta["registry_version"]), str(meta["alias"]), stored["feature_service"]), stored


def load_booster(bento_model):
    """The native XGBoost booster (for inplace_predict and SHAP), one thread per worker."""
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(Path(bento_model.path_of(MLFLOW_FOLDER)) / "model.ubj"))
    booster.set_param({"nthread": 1})
    return booster


def load_sklearn(bento_model):
    import mlflow.sklearn

    return mlflow.sklearn.load_model(bento_model.path_of(MLFLOW_FOLDER))


def global_importance(bento_model) -> dict[str, float]:
    return json.loads(bento_model.info.metadata.get("global_importance", "{}"))
