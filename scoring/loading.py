"""Load a model version: from the BentoML model store (what `make build` packs into the bento)
or, for versions the registry names later, from the MLflow registry into a local cache.

Both hold the same MLflow model folder, whose MLmodel file carries the metadata stored with the
model at training (features, calibration, threshold, segment names, feature service).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.families import FAMILIES
from scoring.base import ModelInfo, family_module

log = logging.getLogger(__name__)
MLFLOW_FOLDER = "mlflow_model"
IMPORTANCE_ARTIFACT = "feature_importance.csv"


@dataclass(frozen=True)
class LoadedVersion:
    family: str
    version: str  # registry version
    model: object  # xgboost.Booster (churn, fraud) or a scikit-learn Pipeline (segment)
    metadata: dict
    importance: dict[str, float] = field(default_factory=dict)  # mean |SHAP| per feature (families with `importance`)

    def info(self, role: str) -> ModelInfo:
        return ModelInfo(self.family, self.version, role, self.metadata["feature_service"])


def load_model(family: str, model_dir: Path):
    """The model as data, as the family's module reads it (scoring/<family>.py `load_model`): an
    XGBoost booster from its UBJSON file, or the segment centres from the version's metadata.
    Nothing is unpickled."""
    return family_module(family).load_model(model_dir)


def model_metadata(model_dir: Path) -> dict:
    from mlflow.models import Model

    return Model.load(str(model_dir)).metadata or {}


def from_bento(bento_model, family: str) -> LoadedVersion:
    """The version packed into the bento (imported by rollout/import_models.py)."""
    model_dir = Path(bento_model.path_of(MLFLOW_FOLDER))
    meta = bento_model.info.metadata
    return LoadedVersion(family, str(meta["registry_version"]), load_model(family, model_dir), model_metadata(model_dir),
                         json.loads(meta.get("global_importance", "{}")))


def read_importance(run_id: str, tracking_uri: str, dst: Path) -> dict[str, float]:
    """The mean |SHAP| table logged beside a version of a family with `importance` (core/families.py)."""
    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=IMPORTANCE_ARTIFACT,
                                                   dst_path=str(dst), tracking_uri=tracking_uri)
    except Exception as e:  # the run has no such artifact
        log.debug("no %s in run %s: %s", IMPORTANCE_ARTIFACT, run_id, e)
        return {}
    rows = Path(path).read_text().splitlines()[1:]
    return {feature: float(value) for feature, value in (row.split(",") for row in rows)}


class VersionRefused(ValueError):
    """A version that must not be served: its files do not load, its features are not what its
    FeatureService serves, or it does not score. Its name in the registry does not change that."""

    def __init__(self, family: str, version: str, why: str):
        super().__init__(f"{family} version {version} {why}"[:500])
        self.version = version


def from_registry(family: str, version: str, tracking_uri: str, cache_dir: Path) -> LoadedVersion:
    """A registry version, downloaded once into cache_dir/<family>/v<version>. A download that
    fails raises what MLflow raised (worth another try); files that do not load raise VersionRefused."""
    model_dir = download(family, version, tracking_uri, cache_dir)
    try:
        from mlflow.models import Model

        run_id = Model.load(str(model_dir)).run_id
        model, metadata = load_model(family, model_dir), model_metadata(model_dir)
    except Exception as e:
        raise VersionRefused(family, version, f"does not load: {type(e).__name__}: {e}") from e
    importance = read_importance(run_id, tracking_uri, model_dir.parent) if FAMILIES[family].importance and run_id else {}
    return LoadedVersion(family, version, model, metadata, importance)


def download(family: str, version: str, tracking_uri: str, cache_dir: Path) -> Path:
    """The version's MLflow model folder in the cache, downloaded from the registry if not there yet."""
    import mlflow

    from core.registry import mlflow_client

    target = cache_dir / family / f"v{version}"
    model_dir = target / "model"
    if not (model_dir / "MLmodel").exists():
        source = mlflow_client(tracking_uri).get_model_version_download_uri(family, version)
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target) as tmp:
            downloaded = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri)
            try:
                Path(downloaded).rename(model_dir)
            except OSError:  # another process sharing the cache (a second worker, the rollout CLI) was first
                if not (model_dir / "MLmodel").exists():
                    raise
                return model_dir
        log.info("downloaded %s version %s from the registry to %s", family, version, model_dir)
    return model_dir
