"""A registry whose segment champion predates `segment_model` (the centres as numbers): the service
cannot load it (it loads no pickle), so the next segment version registered takes the champion
alias instead of waiting for a canary the service could never start. A real MLflow registry
(SQLite), in a process of its own: registering sets MLflow's tracking URI and experiment for the
whole process, which the other integration tests' registry must not see changed."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def scenario(folder: str) -> None:
    """Register an old-style segment version, then two new ones; print each one's aliases."""
    import numpy as np
    import pandas as pd

    from core.feature_sets import SEGMENT_FEATURES
    from core.registry import mlflow_client
    from training.models import train_segment
    from training.registry import log_and_register

    uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.gamma(2.0, 50.0, size=(400, len(SEGMENT_FEATURES))), columns=SEGMENT_FEATURES)
    trained = train_segment(frame, range(3, 4), seed=1)
    old = replace(trained, metadata={k: v for k, v in trained.metadata.items() if k != "segment_model"})
    versions = [log_and_register(model, frame, "segment_v1", uri, Path(folder) / "artifacts") for model in (old, trained, trained)]
    champion = str(mlflow_client(uri).get_registered_model("segment").aliases["champion"])
    print(json.dumps({"aliases": [v.aliases for v in versions], "versions": [v.version for v in versions], "champion": champion}))


def test_a_segment_champion_the_service_cannot_load_gives_way_to_the_next_version(tmp_path):
    code = f"from tests.integration.test_registry_upgrade import scenario; scenario({str(tmp_path)!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # the first version is champion whatever it is; the second, loadable, takes its place; the third waits
    assert result["aliases"] == [["champion"], ["champion"], []]
    assert result["champion"] == result["versions"][1]
