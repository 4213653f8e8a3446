"""Fraud outcomes from costs: the chosen thresholds are the least costly pair, and costs move them
the way they should."""

import itertools

import numpy as np
import pytest

from core.decisions import fraud_outcome
from training import outcomes
from training.outcomes import Costs, choose_thresholds, outcome_metrics, total_cost


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    p = rng.beta(0.3, 8, 4000)
    return rng.random(4000) < p, p  # calibrated by construction


def test_the_chosen_pair_is_the_least_costly_of_every_pair_of_candidates(scored, monkeypatch):
    y, p = scored
    monkeypatch.setattr(outcomes, "CANDIDATES", 40)
    candidates = np.unique(np.append(np.quantile(p, np.linspace(0, 1, 40)), 1.0))
    for costs in (Costs(200, 4, 25), Costs(50, 10, 5), Costs(1000, 1, 500)):
        chosen = choose_thresholds(y, p, costs)
        best = min(total_cost(y, fraud_outcome(p, {"review": r, "block": b}), costs)
                   for r, b in itertools.product(candidates, candidates) if r <= b)
        assert chosen["review"] <= chosen["block"]
        assert total_cost(y, fraud_outcome(p, chosen), costs) == pytest.approx(best)


def test_dearer_misses_review_more_dearer_reviews_review_less_and_cheaper_blocks_block_more(scored):
    y, p = scored
    base = choose_thresholds(y, p, Costs(200, 4, 25))
    assert choose_thresholds(y, p, Costs(2000, 4, 25))["review"] < base["review"]
    assert choose_thresholds(y, p, Costs(200, 12, 25))["review"] > base["review"]
    assert choose_thresholds(y, p, Costs(200, 4, 5))["block"] < base["block"]


def test_the_reported_rates_add_up_and_the_thresholds_cost_less_than_accepting_everything(scored):
    y, p = scored
    costs = Costs(200, 4, 25)
    metrics = outcome_metrics(y, p, choose_thresholds(y, p, costs), costs)
    assert 0 < metrics["review_rate"] + metrics["block_rate"] < 1
    assert 0 <= metrics["recall_blocked"] <= metrics["recall_stopped"] <= 1
    assert metrics["cost_per_1000"] < metrics["cost_per_1000_accept_all"]
