"""Fraud outcomes from costs: the two thresholds on the calibrated fraud probability that turn it
into accept / review / block, chosen where the stated costs of the validation period's
transactions are least, and what they do on the test period.

A transaction costs, by outcome: accepted and fraudulent, `missed` (the loss and the chargeback);
reviewed, `review` (an analyst's time; a review stops a fraud and clears a good customer); blocked
and good, `blocked_good` (the margin lost and a customer annoyed); every other case nothing.

    costs = Costs(missed=200, review=4, blocked_good=25)
    thresholds = choose_thresholds(valid_y, valid_p, costs)    # {"review": 0.02, "block": 0.87}
    outcome_metrics(test_y, test_p, thresholds, costs)         # review rate, precision, recall, cost
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from core.decisions import fraud_outcome

CANDIDATES = 400  # thresholds tried: quantiles of the validation probabilities, and 1 (never)


@dataclass(frozen=True)
class Costs:
    missed: float  # a fraudulent transaction accepted
    review: float  # a transaction reviewed, fraudulent or not
    blocked_good: float  # a good transaction blocked

    def as_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in asdict(self).items()}


def choose_thresholds(y: np.ndarray, p: np.ndarray, costs: Costs) -> dict[str, float]:
    """The review and block thresholds (review <= block) of least total cost on (y, p)."""
    y = np.asarray(y, dtype=bool)
    candidates = np.unique(np.append(np.quantile(p, np.linspace(0.0, 1.0, CANDIDATES)), 1.0))
    order = np.sort(p)
    frauds_below = np.searchsorted(np.sort(p[y]), candidates, side="left")  # frauds with p < candidate
    rows_below = np.searchsorted(order, candidates, side="left")
    goods_below = rows_below - frauds_below
    # cost[i, j]: review from candidates[i], block from candidates[j]
    cost = (costs.missed * frauds_below[:, None] + costs.review * (rows_below[None, :] - rows_below[:, None])
            + costs.blocked_good * (int((~y).sum()) - goods_below)[None, :])
    cost = np.where(np.arange(len(candidates))[:, None] <= np.arange(len(candidates))[None, :], cost, np.inf)
    i, j = np.unravel_index(np.argmin(cost), cost.shape)
    return {"review": float(candidates[i]), "block": float(candidates[j])}


def total_cost(y: np.ndarray, outcomes: np.ndarray, costs: Costs) -> float:
    y = np.asarray(y, dtype=bool)
    return float(costs.missed * (y & (outcomes == "accept")).sum() + costs.review * (outcomes == "review").sum()
                 + costs.blocked_good * (~y & (outcomes == "block")).sum())


def outcome_metrics(y: np.ndarray, p: np.ndarray, thresholds: dict[str, float], costs: Costs) -> dict[str, float]:
    """What the thresholds do on (y, p): each outcome's share and precision, the share of frauds
    stopped (reviewed or blocked) and blocked, and the cost per 1,000 transactions beside
    accepting everything."""
    y = np.asarray(y, dtype=bool)
    outcomes = fraud_outcome(p, thresholds)
    metrics: dict[str, float] = {}
    for outcome in ("review", "block"):
        chosen = outcomes == outcome
        metrics[f"{outcome}_rate"] = float(chosen.mean())
        metrics[f"{outcome}_precision"] = float(y[chosen].mean()) if chosen.any() else float("nan")
    frauds = max(int(y.sum()), 1)
    metrics["recall_stopped"] = float((y & (outcomes != "accept")).sum() / frauds)
    metrics["recall_blocked"] = float((y & (outcomes == "block")).sum() / frauds)
    metrics["cost_per_1000"] = 1000 * total_cost(y, outcomes, costs) / max(len(y), 1)
    metrics["cost_per_1000_accept_all"] = 1000 * costs.missed * float(y.sum()) / max(len(y), 1)
    return metrics
