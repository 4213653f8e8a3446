"""A fourth family is one row of core.families, its scorer module (scoring/<family>.py) and, for an
HTTP route, one row of bentos/routes.py (with its response model in bentos/schemas.py): this test
adds a toy one that way and runs it through the model layer, the service's load checks and
metrics, the settings and the HTTP app. What else a new family needs is what has per-family code
or data of its own: its FeatureService (feature_repo/services.py, core/feature_sets.py), and, for
the pipeline to train it, its training set and training function (training/models.py,
training/pipeline.py) and one row of training.pipeline.TRAINERS, which the pipeline, candidates
and retraining cycles read. The bento packs a model of every family on its own (bentos/service.py)."""

import sys
import types

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from core import families
from core.families import Family
from scoring.base import ModelInfo, assemble, row_results

FEATURES = ["txn_count_30d", "spend_30d"]


class Doubler:
    """The toy's model: twice the mean of its features (a missing one counts as 0)."""

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return 2 * np.nan_to_num(matrix).mean(axis=1)


class ToyScorer:
    def __init__(self, model, metadata: dict, info: ModelInfo, reader):
        self.model, self.metadata, self.info, self.reader = model, metadata, info, reader
        self.features = metadata["features"]

    def score(self, requests: list[dict], reasons: bool = True, keep_features: bool = False) -> list[dict]:
        a = assemble(self.reader, self.info, self.features, requests)
        scores = self.model.predict(a.matrix)
        return row_results(a, requests, self.info, lambda i, customer_id: {
            "customer_id": customer_id, "toy_score": float(scores[i]), "toy_band": "high" if scores[i] > 10 else "low",
            "model": self.info.as_dict(), "feature_sources": a.sources[i]}, keep_features)


@pytest.fixture
def toy(monkeypatch):
    module = types.ModuleType("scoring.toy")
    module.load_model = lambda model_dir: Doubler()
    module.build = lambda loaded, info, reader, top_reasons: ToyScorer(loaded.model, loaded.metadata, info, reader)
    monkeypatch.setitem(sys.modules, "scoring.toy", module)
    monkeypatch.setitem(families.FAMILIES, "toy", Family("toy", "churn_v1", "toy_score", "toy_band", None, rows="customer",
                                                          flavour="sklearn"))
    return module


def loaded_toy(tmp_path):
    from scoring.loading import LoadedVersion, load_model

    return LoadedVersion("toy", "1", load_model("toy", tmp_path), {"features": FEATURES, "feature_service": "churn_v1"})


def test_the_model_layer_loads_and_scores_a_new_family_from_its_row_and_module(toy, tmp_path):
    from scoring.frames import score_frame

    loaded = loaded_toy(tmp_path)
    assert isinstance(loaded.model, Doubler)
    scores = score_frame(loaded, pd.DataFrame({"txn_count_30d": [1.0, 4.0], "spend_30d": [3.0, 20.0], "other": [0.0, 0.0]}))
    assert scores.tolist() == [4.0, 24.0]


def test_the_service_checks_counts_and_settles_a_new_family_without_a_line_of_its_own(toy, tmp_path):
    from prometheus_client import REGISTRY

    from bentos.config import ServingSettings
    from bentos.family import checked_scorer
    from bentos.metrics import record_batch

    class Reader:
        def features_of(self, service):
            return FEATURES

    loaded = loaded_toy(tmp_path)
    checked_scorer(loaded, loaded.info("champion"), Reader(), top_reasons=0)  # raises unless the probe rows score finite numbers
    assert ServingSettings(families="churn,toy").served() == ("churn", "toy")
    before = REGISTRY.get_sample_value("fintech_predictions_total", {"model": "toy", "version": "1", "role": "champion",
                                                                     "outcome": "ok"}) or 0
    record_batch("toy", "1", "champion", [{"toy_score": 3.0}, {"toy_score": 30.0}], 0.001)
    after = REGISTRY.get_sample_value("fintech_predictions_total", {"model": "toy", "version": "1", "role": "champion",
                                                                    "outcome": "ok"})
    assert after - before == 2


def test_one_route_row_gives_a_new_family_its_route_and_its_fast_path(toy, monkeypatch):
    from bentos import routes
    from bentos.api import create_app
    from bentos.config import API_PREFIX, ServingSettings
    from bentos.family import Server
    from bentos.fastpath import FastPath
    from bentos.schemas import ChurnScore, CustomerRequest

    route = routes.Route("toy-score", "toy", "inference", "score", "toy_score", CustomerRequest, ChurnScore,
                         routes.customer_request, routes.churn_body)
    monkeypatch.setattr(routes, "ROUTES", (*routes.ROUTES, route))
    for module in ("bentos.api", "bentos.fastpath"):
        monkeypatch.setattr(f"{module}.ROUTES", routes.ROUTES)
    server = Server(ServingSettings(families="toy"))
    app = create_app(server)
    assert f"{API_PREFIX}/toy-score" in app.openapi()["paths"]
    assert f"{API_PREFIX}/churn-score" not in app.openapi()["paths"]  # not served here
    assert FastPath(app, server).routes == {f"{API_PREFIX}/toy-score": route}
    assert TestClient(app).post(f"{API_PREFIX}/toy-score", json={}).status_code == 422  # the route exists, its body is checked


def test_training_has_one_row_per_family_and_a_labelled_one_fits_on_its_label():
    from training.models import Supervised
    from training.pipeline import TRAINERS

    assert set(TRAINERS) == set(families.FAMILIES)
    for name, trainer in TRAINERS.items():
        label = families.FAMILIES[name].label
        assert (trainer.supervised is None) == (label is None), name
        assert trainer.supervised is None or (isinstance(trainer.supervised, Supervised) and trainer.supervised.label == label)
