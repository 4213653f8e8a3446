"""How far each feature moves from one period to the next with nothing wrong, and the distance
threshold a drift report decides it with (monitoring/drift.py).

Measured at training on the history the service saw period after period, and stored with each
version (training/registry.py: drift_thresholds.json):

    movement = usual_movement(history, features, period="period")
    movement["features"]["txn_count_30d"]    # {"movement": 0.135, "threshold": 0.169}

The distance is Evidently's normed Wasserstein distance (in standard deviations of the earlier
period), the one the reports use from 2,000 rows.
"""

from __future__ import annotations

from itertools import pairwise

import pandas as pd

DISTANCE_THRESHOLD = 0.1
SEASON = pd.Timedelta(days=365)  # the pairs of consecutive periods in the last year measure it: every season once
SEASON_MIN_ROWS = 500  # a period with fewer rows is too noisy to measure it by
SEASON_MARGIN = 1.25
# A raised threshold stays under a quarter of a standard deviation: a shift that size is found on every feature.
MAX_DISTANCE_THRESHOLD = 0.2


def normed_wasserstein(reference: pd.Series, current: pd.Series) -> float:
    """Evidently's normed Wasserstein distance: in standard deviations of the reference."""
    from scipy import stats

    reference, current = reference.dropna().astype(float), current.dropna().astype(float)
    if reference.empty or current.empty:
        return 0.0
    return float(stats.wasserstein_distance(reference, current) / max(float(reference.std(ddof=0)), 0.001))


def usual_movement(history: pd.DataFrame, features: list[str], period: str) -> dict:
    """How far each feature moves from one period of `history` to the next with nothing wrong: the
    largest normed Wasserstein distance between consecutive periods (column `period`, times) of the
    last SEASON, each of SEASON_MIN_ROWS rows or more. What a version stores, with the threshold each
    movement gives (`distance_thresholds`)."""
    sizes = history[period].value_counts().sort_index()
    periods = [p for p, rows in sizes.items() if rows >= SEASON_MIN_ROWS]
    pairs = [(a, b) for a, b in pairwise(periods) if b > periods[-1] - SEASON]
    groups = {p: history[history[period] == p] for p in {p for pair in pairs for p in pair}}
    movement = {f: max((normed_wasserstein(groups[a][f], groups[b][f]) for a, b in pairs), default=0.0) for f in features}
    thresholds = distance_thresholds(movement)
    return {"pairs": [[str(a), str(b)] for a, b in pairs], "default": DISTANCE_THRESHOLD, "margin": SEASON_MARGIN,
            "most": MAX_DISTANCE_THRESHOLD,
            "features": {f: {"movement": round(movement[f], 4), "threshold": round(thresholds[f], 4)} for f in features}}


def distance_thresholds(movement: dict[str, float]) -> dict[str, float]:
    """A feature's distance threshold: DISTANCE_THRESHOLD, or SEASON_MARGIN times its usual movement
    when that is more, at most MAX_DISTANCE_THRESHOLD."""
    return {f: min(MAX_DISTANCE_THRESHOLD, max(DISTANCE_THRESHOLD, SEASON_MARGIN * m)) for f, m in movement.items()}
