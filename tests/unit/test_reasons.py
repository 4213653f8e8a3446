"""Reason codes in words (core/reasons.py, core/reason_codes.toml): every feature a model may read
has a code and its sentences, a sentence says which side of typical the customer's value is on,
an adverse decision carries its principal reasons, and a version with a feature the catalogue
lacks is neither trained nor registered."""

import math

import numpy as np
import pandas as pd
import pytest

from core.feature_sets import SERVICE_FEATURES
from core.reasons import PRINCIPAL, Catalogue, Entry, Explainer, UncataloguedFeatures, catalogue, typical_values
from scoring.base import ModelInfo
from scoring.churn import ChurnScorer
from scoring.fraud import FraudScorer
from tests.unit.test_scoring import FEATURES, FakeReader, booster  # noqa: F401 (fixture)

BOOK = Catalogue(1, "No record of {label}", {
    "spend_30d": Entry("ACT10", "card spending in the last 30 days", "More spending", "Less spending"),
    "is_new_device": Entry("TXN09", "whether this device was used before", "A new device", "A known device"),
    "channel_index": Entry("TXN12", "the channel", "The channel", "The channel"),
})


def test_every_feature_of_every_feature_service_has_a_code_a_label_and_both_sentences():
    book = catalogue()
    for service, features in SERVICE_FEATURES.items():
        book.require(features, service)  # raises, naming them, if any were missing
    entries = list(book.entries.values())
    assert len({e.code for e in entries}) == len(entries)
    assert all(e.code and e.label and e.high and e.low for e in entries)
    assert book.version >= 1 and "{label}" in book.missing


def test_a_sentence_says_which_side_of_typical_the_value_is_on_not_which_way_the_score_moved():
    explainer = Explainer(["spend_30d", "is_new_device", "channel_index"],
                          {"spend_30d": [300.0, 410.0], "is_new_device": [0.0, 0.04], "channel_index": [1.0, 1.3]}, BOOK)
    assert explainer.sentence(0, 500.0) == "More spending" and explainer.sentence(0, 20.0) == "Less spending"
    assert explainer.sentence(1, 1.0) == "A new device"
    assert explainer.sentence(1, 0.0) == "A known device"  # at the median (0) but below the mean: the low side
    assert explainer.sentence(2, 3.0) == explainer.sentence(2, 0.0) == "The channel"  # no order: one sentence
    assert explainer.sentence(0, math.nan) == "No record of card spending in the last 30 days"
    # an increase in risk from a LOW value still reads as low
    [reason] = explainer.top(np.array([0.9, 0.0, 0.0]), np.array([20.0, 0.0, 1.0]), 1)
    assert reason == {"feature": "spend_30d", "code": "ACT10", "sentence": "Less spending", "shap_value": 0.9,
                      "feature_value": 20.0, "direction": "increases risk"}


def test_a_version_without_typical_values_gives_codes_and_no_sentences():
    explainer = Explainer(["spend_30d", "uncatalogued"], None, BOOK)
    reasons = explainer.top(np.array([0.5, -0.7]), np.array([1.0, 2.0]), 2)
    assert [(r["feature"], r["code"], r["sentence"]) for r in reasons] == [("uncatalogued", None, None), ("spend_30d", "ACT10", None)]


def test_principal_reasons_are_the_largest_increases_at_most_four_largest_first():
    features = [f"f{i}" for i in range(7)]
    explainer = Explainer(features, None, Catalogue(1, "{label}", {f: Entry(f"C{i}", f, "hi", "lo") for i, f in enumerate(features)}))
    contributions = np.array([0.1, -2.0, 0.5, 0.3, 0.0, 0.9, 0.2])
    principal = explainer.principal(contributions, np.zeros(7))
    assert len(principal) == PRINCIPAL == 4
    assert [r["code"] for r in principal] == ["C5", "C2", "C3", "C6"]  # f1 moved most, but lowered the risk
    assert [r["code"] for r in explainer.principal(np.array([-1.0, 0.2, 0, 0, 0, 0, 0]), np.zeros(7))] == ["C1"]


def test_typical_values_are_each_features_median_and_mean():
    frame = pd.DataFrame({"a": [1.0, 2.0, 9.0], "b": [np.nan, 4.0, 4.0], "never": [np.nan] * 3})
    assert typical_values(frame, ["a", "b", "never"]) == {"a": [2.0, 4.0], "b": [4.0, 4.0]}  # "never": no sentence


def scorer(kind, booster, typical):  # noqa: F811
    info = ModelInfo(kind.__name__, "3", "champion", "v1")
    if kind is ChurnScorer:
        metadata = {"features": FEATURES, "calibration": {"a": 1.0, "b": 0.0}, "typical": typical,
                    "risk_cutoffs": {"medium": 0.2, "high": 0.5, "critical": 0.8}}
    else:
        metadata = {"features": FEATURES, "threshold": 0.5, "typical": typical}
    return kind(booster, metadata, info, FakeReader(), top_n=2)


@pytest.mark.parametrize("kind", [ChurnScorer, FraudScorer])
def test_an_adverse_decision_carries_principal_reasons_in_words_and_any_other_none(kind, booster):  # noqa: F811
    typical = {"days_since_last_txn": [30.0, 35.0], "txn_count_30d": [5.0, 6.0], "spend_30d": [400.0, 450.0]}
    lapsed, active = scorer(kind, booster, typical).score([{"customer_id": "B"}, {"customer_id": "A"}])
    adverse = lapsed.get("risk_level") in ("high", "critical") or lapsed.get("is_fraud") is True
    assert adverse and not (active.get("risk_level") in ("high", "critical") or active.get("is_fraud"))
    principal = lapsed["principal_reasons"]
    assert 1 <= len(principal) <= PRINCIPAL and principal[0]["feature"] == "days_since_last_txn"
    assert principal[0]["code"] == "ACT01"
    assert principal[0]["sentence"] == "A longer time since the last card transaction than for most customers"  # 85 days > 30
    assert all(r["shap_value"] > 0 for r in principal)
    assert [r["shap_value"] for r in principal] == sorted((r["shap_value"] for r in principal), reverse=True)
    assert active["principal_reasons"] == [] and all(r["sentence"] for r in active["reasons"])


def test_training_and_registering_a_version_with_an_uncatalogued_feature_fail_naming_it():
    from training.models import TrainedModel, train_churn
    from training.registry import log_and_register

    with pytest.raises(UncataloguedFeatures, match="mystery_ratio"):
        train_churn(pd.DataFrame(), features=["days_since_last_txn", "mystery_ratio"])
    trained = TrainedModel("churn", None, ["days_since_last_txn", "mystery_ratio", "other_mystery"], {}, {})
    # refused before the registry is asked: no MLflow server answers this address
    with pytest.raises(UncataloguedFeatures, match="2 feature.*mystery_ratio, other_mystery"):
        log_and_register(trained, pd.DataFrame(), "churn_v9", "http://127.0.0.1:9")
