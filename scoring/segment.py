"""Segment: the customer's behavioural segment, the nearest k-means centre, as numbers stored in
the version's metadata (no pickle is loaded).

    scorer = build(loaded, info, reader, top_reasons=0)
    scorer.score([{"customer_id": "C0000001"}])   # [{"segment_id": 2, "segment_name": ...}]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scoring.base import FeatureReader, Freshness, ModelInfo, assemble, row_results
from scoring.loading import model_metadata


class SegmentCentres:
    """The segment model as the service runs it: numbers from the version's metadata, never a
    pickle (a registry that could be written to would otherwise run code in every serving pod).
    A customer's segment is the nearest centre after log1p and scaling, as the fitted pipeline's
    k-means assigns it (training/models.py `segment_model`; a model test holds the two equal)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, centres: np.ndarray):
        self.mean, self.scale, self.centres = mean, scale, centres

    @classmethod
    def from_metadata(cls, stored: dict) -> SegmentCentres:
        if stored.get("transform") != "log1p":
            raise ValueError(f"unknown segment transform {stored.get('transform')!r}")
        try:
            mean, scale = np.asarray(stored["mean"], float), np.asarray(stored["scale"], float)
            centres = np.asarray(stored["centres"], float)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"the segment centres are not tables of numbers: {e}") from e
        if centres.ndim != 2 or mean.shape != scale.shape or centres.shape[1:] != mean.shape or not len(centres):
            raise ValueError(f"segment centres of shape {centres.shape} do not fit {mean.shape[0]} features")
        return cls(mean, scale, centres)

    def predict(self, frame) -> np.ndarray:
        scaled = (np.log1p(np.asarray(frame, float)) - self.mean) / self.scale
        distances = ((scaled[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)
        return distances.argmin(axis=1)


class SegmentScorer:
    freshness: Freshness | None = None  # how old each feature view may be (the service sets it)

    def __init__(self, pipeline, metadata: dict, info: ModelInfo, reader: FeatureReader):
        self.pipeline, self.metadata, self.info, self.reader = pipeline, metadata, info, reader
        self.features: list[str] = metadata["features"]
        self.names: dict[str, str] = metadata["segment_names"]

    def score(self, requests: list[dict], reasons: bool = False, keep_features: bool = False) -> list[dict]:
        """A segment has no reasons: `reasons` is accepted so every family's scorer is called alike."""
        import pandas as pd

        a = assemble(self.reader, self.info, self.features, requests, freshness=self.freshness)
        # k-means has no missing-value branch: a feature the store lacks counts as zero activity
        frame = pd.DataFrame(np.nan_to_num(a.matrix, nan=0.0), columns=self.features)
        segments = self.pipeline.predict(frame) if len(frame) else []
        return row_results(a, requests, self.info, lambda i, customer_id: {
            "customer_id": customer_id, "segment_id": int(segments[i]), "segment_name": self.names[str(int(segments[i]))],
            "model": self.info.as_dict(), "feature_sources": a.sources[i],
        }, keep_features)


def load_model(model_dir: Path) -> SegmentCentres:
    """The centres from the version's metadata. The scikit-learn pipeline MLflow stores for segment
    is never unpickled, so a version written by whoever can reach the registry cannot run code in
    the service."""
    stored = model_metadata(model_dir).get("segment_model")
    if stored is None:
        raise ValueError("the version carries no segment_model (its centres as numbers): retrain it")
    return SegmentCentres.from_metadata(stored)


def build(loaded, info: ModelInfo, reader: FeatureReader, top_reasons: int) -> SegmentScorer:
    return SegmentScorer(loaded.model, loaded.metadata, info, reader)
