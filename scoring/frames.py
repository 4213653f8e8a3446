"""Scoring a table of features with a model version through the service's own scorers, away from
a server. The served reference stored with each version and the drift report's `--current` files
without a score column are scored this way, so their scores are the ones the service gives.

    loaded = from_registry("churn", "3", tracking_uri, cache_dir)
    scores = score_frame(loaded, features)      # one score per row, in the inference log's terms
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.families import FAMILIES
from scoring.base import OnlineFeatures, build_scorer

CHUNK_ROWS = 10_000


class FrameReader:
    """A feature reader over a table: a request's customer_id is its row's position."""

    def __init__(self, frame: pd.DataFrame):
        self.columns = {name: frame[name].to_numpy(dtype=float) for name in frame.columns}

    def read(self, feature_service: str, rows: list[dict]) -> OnlineFeatures:
        positions = np.array([int(row["customer_id"]) for row in rows], dtype=int)
        return OnlineFeatures({name: column[positions] for name, column in self.columns.items()},
                              np.ones(len(rows), dtype=bool))


def score_frame(loaded, frame: pd.DataFrame) -> np.ndarray:
    """The version's score of each row of `frame` (which holds at least its features; NaN where a
    value is missing): churn or fraud probability, or segment id."""
    return scored_frame(loaded, frame)[0]


def scored_frame(loaded, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Each row's score, and its decision as the inference log writes it (risk level, is_fraud,
    segment name, as text)."""
    family = FAMILIES[loaded.family]
    scores, decisions = np.empty(len(frame)), []
    for i, result in enumerate(results_of(loaded, frame)):
        scores[i] = result[family.score_field]
        decisions.append(str(result[family.decision_field]))
    return scores, decisions


def results_of(loaded, frame: pd.DataFrame, reasons: bool = False):
    """Each row's result as the service's scorer gives it (with its reasons when `reasons`), in
    chunks of CHUNK_ROWS."""
    features = loaded.metadata["features"]
    if missing := [name for name in features if name not in frame.columns]:
        raise ValueError(f"the table lacks {len(missing)} feature(s) of {loaded.family} version {loaded.version}: "
                         f"{', '.join(missing[:10])}")
    try:
        table = frame[features].astype(float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"a feature column of the table is not numeric: {e}") from e
    scorer = build_scorer(loaded, loaded.info("offline"), FrameReader(table), top_reasons=1 if reasons else 0)
    for start in range(0, len(table), CHUNK_ROWS):
        requests = [{"customer_id": str(i)} for i in range(start, min(start + CHUNK_ROWS, len(table)))]
        yield from scorer.score(requests, reasons=reasons)
