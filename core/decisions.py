"""How a model's raw output becomes a decision: calibration, churn risk levels and fraud outcomes.

Shared by training (which fits the coefficients and cut-offs) and serving (which applies the ones
stored with the model); only numpy, so the services import it cheaply.
"""

from __future__ import annotations

import numpy as np

RISK_LEVELS = ("low", "medium", "high", "critical")
OUTCOMES = ("accept", "review", "block")  # a fraud decision, least severe first


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def calibrate(raw: np.ndarray, calibration: dict) -> np.ndarray:
    """Platt scaling of raw model probabilities with the coefficients stored with the model."""
    return 1.0 / (1.0 + np.exp(-(calibration["a"] * logit(raw) + calibration["b"])))


def risk_level(probability: np.ndarray, cutoffs: dict[str, float]) -> np.ndarray:
    """low below the `medium` cut-off, then medium, high, critical."""
    levels = np.full(len(probability), RISK_LEVELS[0], dtype=object)
    for level in RISK_LEVELS[1:]:
        levels[probability >= cutoffs[level]] = level
    return levels


def fraud_outcome(probability: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """accept below the `review` threshold, review below the `block` one, block from it on."""
    outcomes = np.full(len(probability), OUTCOMES[0], dtype=object)
    for outcome in OUTCOMES[1:]:
        outcomes[probability >= thresholds[outcome]] = outcome
    return outcomes


def severest(outcomes: list[str]) -> str:
    """The most severe of fraud outcomes (accept when there are none)."""
    return max(outcomes, key=OUTCOMES.index, default=OUTCOMES[0])
