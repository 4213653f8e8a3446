"""Following the registry with a fake one: an outage is kept with its start and backed off from; a
version that fails its checks at load is refused for good while the live set keeps serving."""

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

import bentos.versions as versions_module
from bentos.family import checked_scorer
from core.registry import CHAMPION, Plan, RegistryUnavailable
from scoring.loading import LoadedVersion, VersionRefused

FEATURES = ["days_since_last_txn", "txn_count_30d", "spend_30d"]
CHURN_METADATA = {"features": FEATURES, "feature_service": "churn_v1", "calibration": {"a": 1.0, "b": 0.0},
                  "risk_cutoffs": {"medium": 0.2, "high": 0.5, "critical": 0.8}}


class Registry:
    """What read_plan and from_registry answer; `down` makes every read fail."""

    def __init__(self, monkeypatch):
        self.plan, self.down, self.broken = Plan("1"), False, set()
        monkeypatch.setattr(versions_module, "read_plan", self.read_plan)
        monkeypatch.setattr(versions_module, "from_registry", self.download)

    def read_plan(self, family, tracking_uri, default_share, default_shadow):
        if self.down:
            raise RegistryUnavailable("cannot read 'churn' from the registry at http://mlflow:5000: connection refused")
        return self.plan

    def download(self, family, version, tracking_uri, cache_dir):
        return LoadedVersion(family, version, None, {"feature_service": "churn_v1", "broken": version in self.broken})


def build(loaded, info):
    if loaded.metadata["broken"]:
        raise VersionRefused(loaded.family, loaded.version, "scores [nan, nan, nan] on rows of missing, zero and one values")
    return type("Scorer", (), {"info": info})()


@pytest.fixture
def registry(monkeypatch):
    return Registry(monkeypatch)


@pytest.fixture
def versions(registry, tmp_path):
    packed = LoadedVersion("churn", "1", None, {"feature_service": "churn_v1", "broken": False})
    return versions_module.Versions("churn", packed, build, "http://mlflow:5000", tmp_path)


def test_an_outage_is_reported_with_its_start_and_the_poll_backs_off_until_the_registry_answers(registry, versions):
    registry.down = True
    for _ in range(3):
        answer = versions.reload()
    status = versions.describe()
    assert answer["changed"] is False and "connection refused" in answer["error"]
    assert status["versions"][0]["version"] == "1" and "connection refused" in status["registry_error"]
    assert status["registry_failures"] == 3 and status["registry_error_since"] is not None
    assert [versions.next_poll_s(15, 120) for versions.failures in range(5)] == [15, 30, 60, 120, 120]
    registry.down, registry.plan, versions.failures = False, Plan("2"), 3
    assert versions.reload()["changed"] is True and versions.live.versions() == {CHAMPION: "2"}
    status = versions.describe()
    assert (status["registry_error"], status["registry_error_since"], status["registry_failures"]) == (None, None, 0)
    assert versions.next_poll_s(15, 120) == 15


def test_a_refused_version_is_not_served_nor_tried_again_and_the_next_good_one_is(registry, versions):
    registry.plan, registry.broken = Plan("1", challenger="2", share=10.0), {"2"}
    answer = versions.reload()
    assert answer["changed"] is False and "scores [nan" in answer["refused"]["2"]
    assert versions.live.versions() == {CHAMPION: "1"} and versions.asked_refused() == ["2"]
    registry.broken = set()  # the same version is not tried again: the registry must name another
    again = versions.reload()  # and every later answer names the refusal (the cycle reads it there)
    assert again["changed"] is False and again["refused"] == answer["refused"] and versions.live.versions() == {CHAMPION: "1"}
    registry.plan = Plan("3")
    assert versions.reload()["changed"] is True and versions.live.versions() == {CHAMPION: "3"}
    assert versions.asked_refused() == [] and "2" in versions.describe()["refused_versions"]


class Features:
    """The feature names a FeatureService serves, as the Feast reader reports them."""

    def __init__(self, served):
        self.served = served

    def features_of(self, service):
        if service not in self.served:
            raise KeyError(f"feature service {service} not found")
        return self.served[service]


@pytest.fixture(scope="module")
def booster():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, [90, 30, 1000], size=(500, 3))
    return xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, x[:, 0] > 45, feature_names=FEATURES), 5)


def churn_version(booster, **metadata) -> LoadedVersion:
    return LoadedVersion("churn", "7", booster, {**CHURN_METADATA, **metadata})


def test_a_version_that_reads_features_its_feature_service_lacks_is_refused_naming_them(booster):
    loaded = churn_version(booster)
    info = loaded.info("challenger")
    assert checked_scorer(loaded, info, Features({"churn_v1": FEATURES + ["spend_90d"]}), 3).features == FEATURES
    with pytest.raises(VersionRefused, match=r"churn version 7 reads features .*'churn_v1'.*\['spend_30d'\]"):
        checked_scorer(loaded, info, Features({"churn_v1": FEATURES[:2]}), 3)
    with pytest.raises(VersionRefused, match="'churn_v1', which Feast does not know"):
        checked_scorer(loaded, info, Features({}), 3)


def test_a_version_that_scores_nan_or_cannot_score_is_refused(booster):
    model = json.loads(booster.save_raw("json"))
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]  # its leaves become NaN: so does every score
    tree["split_conditions"] = [np.nan if child == -1 else c for child, c in zip(tree["left_children"], tree["split_conditions"])]
    nan_booster = xgb.Booster(model_file=bytearray(json.dumps(model).encode()))
    reader = Features({"churn_v1": FEATURES})
    with pytest.raises(VersionRefused, match=r"churn version 7 scores \[nan, nan, nan\]"):
        checked_scorer(churn_version(nan_booster), churn_version(nan_booster).info("challenger"), reader, 3)
    nan_calibration = churn_version(booster, calibration={"a": np.nan, "b": 0.0})
    with pytest.raises(VersionRefused, match=r"scores \[nan, nan, nan\]"):
        checked_scorer(nan_calibration, nan_calibration.info("challenger"), reader, 3)
    no_cutoffs = churn_version(booster, risk_cutoffs={})
    with pytest.raises(VersionRefused, match="fails to score: KeyError"):
        checked_scorer(no_cutoffs, no_cutoffs.info("challenger"), reader, 3)


def test_a_version_another_process_downloaded_first_is_used_not_refused(tmp_path, monkeypatch):
    """Two workers (or a worker and the rollout CLI) share the model cache and may fetch the same
    version at once: the one that renames second finds the folder there and takes it."""
    import mlflow

    import core.registry
    from scoring.loading import download

    class Registry:
        def get_model_version_download_uri(self, family, version):
            return "models:/churn/6"

    def fetch(artifact_uri, dst_path, tracking_uri):
        winner = tmp_path / "churn" / "v6" / "model"  # the other process finishes while this one downloads
        winner.mkdir(parents=True)
        (winner / "MLmodel").write_text("artifact_path: model\n")
        mine = Path(dst_path) / "artifacts"
        mine.mkdir()
        (mine / "MLmodel").write_text("artifact_path: model\n")
        return str(mine)

    monkeypatch.setattr(core.registry, "mlflow_client", lambda uri: Registry())
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", fetch)
    assert download("churn", "6", "sqlite:///unused.db", tmp_path) == tmp_path / "churn" / "v6" / "model"
    assert [p.name for p in (tmp_path / "churn" / "v6").iterdir()] == ["model"]  # its own copy is gone
