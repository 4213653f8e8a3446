"""A registry whose segment champion predates `segment_model` (the centres as numbers): the service
cannot load it (it loads no pickle), so the next segment version registered takes the champion
alias instead of waiting for a canary the service could never start. A real MLflow registry (SQLite)."""

from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest

from core.registry import mlflow_client
from core.feature_sets import SEGMENT_FEATURES
from training.models import train_segment
from training.registry import log_and_register

pytestmark = pytest.mark.integration


def test_a_segment_champion_the_service_cannot_load_gives_way_to_the_next_version(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.gamma(2.0, 50.0, size=(400, len(SEGMENT_FEATURES))), columns=SEGMENT_FEATURES)
    trained = train_segment(frame, range(3, 4), seed=1)
    old = replace(trained, metadata={k: v for k, v in trained.metadata.items() if k != "segment_model"})
    first = log_and_register(old, frame, "segment_v1", uri, tmp_path / "artifacts")
    assert first.aliases == ["champion"]  # a registry's first version is champion whatever it is
    second = log_and_register(trained, frame, "segment_v1", uri, tmp_path / "artifacts")
    assert second.aliases == ["champion"]
    third = log_and_register(trained, frame, "segment_v1", uri, tmp_path / "artifacts")
    assert third.aliases == []  # a champion the service can load keeps its place
    mlflow.set_tracking_uri(uri)
    assert str(mlflow_client(uri).get_registered_model("segment").aliases["champion"]) == second.version
