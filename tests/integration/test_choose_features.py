"""Fraud on the better FeatureService: `rollout choose` (make up's last training step) trains fraud
on fraud_v2 and moves the champion only when the out-of-time guard says it is better, with a report;
a retraining cycle then trains the champion's FeatureService, not the family table's. On a copy of
the session's data folder (its registry too), as test_retrain.py does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from core.feature_sets import SERVICE_FEATURES
from core.registry import CHAMPION, champion_feature_service, mlflow_client, read_plan
from rollout.retrain import RetrainSettings, Service, run_cycle
from rollout.settings import GateSettings
from tests.integration.conftest import own_copy

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("tracking_uri_kept")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own(settings, built, tmp_path_factory):
    return own_copy(settings, tmp_path_factory, "choose")


@pytest.fixture(scope="module")
def chosen(own) -> dict:
    before = read_plan("fraud", own.tracking_uri).champion
    done = subprocess.run([sys.executable, "-m", "rollout", "choose", "fraud", "--service", "fraud_v2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DATA_DIR": str(own.data_dir), "MLFLOW_TRACKING_URI": own.tracking_uri})
    assert done.returncode in (0, 1), done.stderr[-3000:]
    [report_file] = (own.data_dir / "reports" / "promotions").glob("fraud-*.json")
    return {"before": before, "exit": done.returncode, "stdout": done.stdout, "report": json.loads(report_file.read_text())}


def test_choose_promotes_fraud_v2_only_when_the_guard_says_it_is_better(own, chosen):
    report, margin = chosen["report"], RetrainSettings().margin
    [quality] = [g for g in report["gates"] if g["name"] == "quality"]
    gain = quality["figures"]["challenger"] - quality["figures"]["champion"]
    promoted = gain >= margin
    assert report["decision"] == ("promote" if promoted else "refuse") and chosen["exit"] == (0 if promoted else 1)
    assert report["feature_services"] == {"champion": "fraud_v1", "challenger": "fraud_v2"}
    assert "Before the first serve: fraud_v2 against the champion's fraud_v1" in chosen["stdout"]
    champion = read_plan("fraud", own.tracking_uri).champion
    assert champion == (report["challenger"] if promoted else chosen["before"])
    expected = "fraud_v2" if promoted else "fraud_v1"
    assert champion_feature_service(mlflow_client(own.tracking_uri), "fraud", "none") == expected


def test_a_retraining_cycle_trains_the_champions_feature_service(own, chosen):
    client = mlflow_client(own.tracking_uri)
    client.set_registered_model_alias("fraud", CHAMPION, chosen["report"]["challenger"])  # a fraud_v2 champion either way

    def refuse(*_):
        raise AssertionError("a dry run reached the service")

    quick = RetrainSettings(budget_min=0.3, max_trials=1)
    cycle = run_cycle(own, quick, GateSettings(), "fraud", Service(metrics=refuse, reload=refuse), dry_run=True)
    assert cycle["outcome"] in ("dry_run", "refused"), cycle["reason"]
    [searching] = [s for s in cycle["stages"] if s["stage"] == "searching"]
    assert searching["feature_service"] == "fraud_v2"
    version = client.get_model_version("fraud", cycle["candidate"])
    assert client.get_run(version.run_id).data.tags["feature_service"] == "fraud_v2"
    metadata = mlflow.models.get_model_info(version.source).metadata
    assert metadata["feature_service"] == "fraud_v2" and metadata["features"] == SERVICE_FEATURES["fraud_v2"]
