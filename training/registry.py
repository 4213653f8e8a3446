"""Log a trained model to MLflow and register it as a new version.

The first version of each registered model gets the alias `champion`; later versions are
registered without moving any alias (promotion is a separate, gated step).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from importlib.metadata import version as installed
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from core.decisions import calibrate
from core.families import FAMILIES
from core.reasons import catalogue
from core.registry import CHAMPION, REFERENCE_ARTIFACT, SERVED_REFERENCE_ARTIFACT, THRESHOLDS_ARTIFACT, mlflow_client
from training.models import TrainedModel

log = logging.getLogger(__name__)
EXPERIMENT = "fintech-models"
REFERENCE_ROWS = 10_000


def pip_requirements(*libraries: str) -> list[str]:
    """What loading the model needs, pinned to this environment. Given explicitly, MLflow skips
    inferring them, which loads the model in a subprocess: 5.6 s per XGBoost model and 9.4 s per
    scikit-learn one here, against 0.1 s."""
    return [f"{name}=={installed(name)}" for name in ("mlflow", "numpy", "pandas", *libraries)]


@dataclass
class Registered:
    name: str
    version: str
    run_id: str
    aliases: list[str]


def fingerprint(frame: pd.DataFrame) -> str:
    """A short content hash of a training frame: same rows and values, same fingerprint."""
    row_hashes = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:16]


def reference_sample(trained: TrainedModel, training_frame: pd.DataFrame, rows: int = REFERENCE_ROWS, seed: int = 0) -> pd.DataFrame:
    """A sample of the training rows' features and the model's score on them, in the inference
    log's terms (`score`: churn or fraud probability, or segment id)."""
    sample = training_frame[trained.features].sample(min(rows, len(training_frame)), random_state=seed).reset_index(drop=True)
    if FAMILIES[trained.name].categorical:
        score = trained.model.predict(sample)
    else:
        score = trained.model.predict_proba(sample)[:, 1]
        if "calibration" in trained.metadata:
            score = calibrate(score, trained.metadata["calibration"])
    return sample.assign(score=score)


def use_experiment(name: str, tracking_uri: str, artifact_root: Path | None = None) -> None:
    """Make `name` the active experiment; a new one keeps its artifacts under artifact_root
    (without it MLflow would use ./mlruns, wherever the command runs)."""
    mlflow.set_tracking_uri(tracking_uri)
    if artifact_root is not None and mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_root.resolve().as_uri())
    mlflow.set_experiment(name)


def log_and_register(trained: TrainedModel, training_frame: pd.DataFrame, feature_service: str, tracking_uri: str,
                     artifact_root: Path | None = None) -> Registered:
    reasons = catalogue()
    reasons.require(trained.features, f"{trained.name} (feature service {feature_service})")
    use_experiment(EXPERIMENT, tracking_uri, artifact_root)
    example = training_frame[trained.features].head(5)
    metadata = {**trained.metadata, "feature_service": feature_service, "features": trained.features,
                "data_fingerprint": fingerprint(training_frame), "reason_catalogue": reasons.version}
    with mlflow.start_run(run_name=f"train-{trained.name}") as run:
        mlflow.set_tags({"model": trained.name, "feature_service": feature_service, "data_fingerprint": metadata["data_fingerprint"]})
        mlflow.log_params({k: v for k, v in trained.params.items() if v is not None and len(str(v)) < 500})
        mlflow.log_metrics({k: float(v) for k, v in trained.metrics.items()})
        if FAMILIES[trained.name].flavour == "sklearn":
            signature = infer_signature(example, trained.model.predict(example))
            info = mlflow.sklearn.log_model(trained.model, name="model", signature=signature, input_example=example,
                                            registered_model_name=trained.name, metadata=metadata,
                                            pip_requirements=pip_requirements("scikit-learn"))
        else:
            signature = infer_signature(example, trained.model.predict_proba(example)[:, 1])
            info = mlflow.xgboost.log_model(trained.model, name="model", signature=signature, input_example=example,
                                            registered_model_name=trained.name, metadata=metadata, model_format="ubj",
                                            pip_requirements=pip_requirements("xgboost", "scikit-learn"))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "model_metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
            for artifact_name, table in trained.artifacts.items():
                table.to_csv(Path(tmp) / f"{artifact_name}.csv", index=False)
            reference_sample(trained, training_frame).to_parquet(Path(tmp) / REFERENCE_ARTIFACT, index=False)
            mlflow.log_artifacts(tmp)

    client = mlflow_client(tracking_uri)
    version = str(info.registered_model_version)
    champion = client.get_registered_model(trained.name).aliases.get(CHAMPION)
    if champion is None or not servable(client, trained.name, str(champion)):
        if champion is not None:
            log.warning("%s: champion version %s cannot be served (a segment version without its centres as numbers, "
                        "trained before the service stopped loading pickles): version %s takes its place", trained.name,
                        champion, version)
        client.set_registered_model_alias(trained.name, CHAMPION, version)
    aliases = [a for a, v in client.get_registered_model(trained.name).aliases.items() if str(v) == version]
    log.info("registered %s version %s (aliases: %s)", trained.name, version, ", ".join(aliases) or "none")
    return Registered(trained.name, version, run.info.run_id, aliases)


def servable(client, name: str, version: str) -> bool:
    """Whether the service can load the version: a scikit-learn version must carry its model as
    numbers (`segment_model`: scoring/loading.py loads no pickle); every XGBoost version can."""
    if FAMILIES[name].flavour != "sklearn":
        return True
    import mlflow

    source = client.get_model_version(name, version).source
    return "segment_model" in (mlflow.models.get_model_info(source).metadata or {})


def log_served_reference(registered: Registered, population: pd.DataFrame, tracking_uri: str) -> None:
    """Store beside a registered version what the service will see (`population`, from
    pipeline.served_population), scored by that version as the service scores it: the registered
    files loaded and scored by the service's own scorers (scoring/frames.py). Drift reports compare
    served windows with it by default."""
    from scoring.frames import score_frame
    from scoring.loading import from_registry

    with tempfile.TemporaryDirectory() as tmp:
        loaded = from_registry(registered.name, registered.version, tracking_uri, Path(tmp) / "models")
        features = loaded.metadata["features"]
        reference = population[features].reset_index(drop=True).assign(score=score_frame(loaded, population))
        reference.to_parquet(Path(tmp) / SERVED_REFERENCE_ARTIFACT, index=False)
        mlflow_client(tracking_uri).log_artifact(registered.run_id, str(Path(tmp) / SERVED_REFERENCE_ARTIFACT))
    log.info("%s version %s: a served reference of %s rows", registered.name, registered.version, f"{len(reference):,}")


def log_drift_thresholds(registered: Registered, movement: dict, tracking_uri: str) -> None:
    """Store beside a registered version each feature's usual movement between periods and the
    distance threshold it gives (monitoring.drift.usual_movement); drift reports decide with them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / THRESHOLDS_ARTIFACT
        path.write_text(json.dumps(movement, indent=2))
        mlflow_client(tracking_uri).log_artifact(registered.run_id, str(path))
    raised = {f: row["threshold"] for f, row in movement["features"].items() if row["threshold"] > movement["default"]}
    log.info("%s version %s: drift thresholds raised for %d of %d features%s", registered.name, registered.version,
             len(raised), len(movement["features"]), (": " + ", ".join(f"{f} {t:.2f}" for f, t in raised.items())) if raised else "")
