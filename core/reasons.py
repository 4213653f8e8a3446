"""Reason codes in words: each feature's code and the sentence a customer reads, from the
catalogue in core/reason_codes.toml, and the principal reasons of an adverse decision.

    explainer = Explainer(features, metadata["typical"])     # once per model version
    explainer.top(contributions, values, 5)                  # the reasons of any score
    explainer.principal(contributions, values)               # at most four, for an adverse decision

A reason's sentence says which side of typical the customer's value is on ("More card transactions
in the last 7 days than most customers"), not which way the score moved: a tree model can raise a
risk for a value that is high and for one that is low, so the sign of a contribution does not say
which it was. Typical is the feature's median over the version's training rows (`typical_values`,
stored with the version); a value at the median is on the side of the mean.
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CATALOGUE = Path(__file__).with_name("reason_codes.toml")
PRINCIPAL = 4  # the most reasons an adverse-action notice conventionally gives


class UncataloguedFeatures(ValueError):
    """A model reads features that have no reason code."""

    def __init__(self, features: list[str], what: str):
        super().__init__(f"{what} reads {len(features)} feature(s) with no reason code in {CATALOGUE.name}: "
                         f"{', '.join(features)}; add each with a code, a label and its sentences")
        self.features = features


@dataclass(frozen=True)
class Entry:
    code: str
    label: str  # what the feature is, for a value that is missing
    high: str  # the sentence for a value above typical
    low: str  # below typical; the same as `high` for a feature whose values have no order


@dataclass(frozen=True)
class Catalogue:
    version: int
    missing: str  # the sentence for a missing value, with {label}
    entries: dict[str, Entry]

    def require(self, features: list[str], what: str) -> None:
        """Raise UncataloguedFeatures naming every feature of `features` the catalogue lacks."""
        if missing := [f for f in features if f not in self.entries]:
            raise UncataloguedFeatures(missing, what)


@functools.cache
def catalogue(path: Path = CATALOGUE) -> Catalogue:
    raw = tomllib.loads(path.read_text())
    entries = {}
    for feature, entry in raw["features"].items():
        high = entry.get("high", entry.get("sentence"))
        entries[feature] = Entry(entry["code"], entry["label"], high, entry.get("low", high))
    codes = [e.code for e in entries.values()]
    if len(set(codes)) != len(codes):
        raise ValueError(f"{path.name}: a code is given to more than one feature")
    return Catalogue(raw["version"], raw["missing"], entries)


def typical_values(frame, features: list[str]) -> dict[str, list[float]]:
    """Each feature's median and mean over `frame` (a training split): what a reason's side is
    measured against. A feature with no value in any row is left out (its reasons get no sentence)."""
    return {f: [float(frame[f].median()), float(frame[f].mean())] for f in features if frame[f].notna().any()}


class Explainer:
    """A version's reasons: its features' codes and sentences, and which side of typical each value is on."""

    def __init__(self, features: list[str], typical: dict[str, list[float]] | None, book: Catalogue | None = None):
        book = book or catalogue()
        self.features = features
        entries = [book.entries.get(f) for f in features]
        self.codes = [e.code if e else None for e in entries]
        self.high = [e.high if e else None for e in entries]
        self.low = [e.low if e else None for e in entries]
        self.missing = [book.missing.format(label=e.label) if e else None for e in entries]
        # each feature's (median, mean), as Python floats (read per reason, on the request path); None for a
        # feature without them, and for every feature of a version registered before they were stored
        typical = typical or {}
        self.typical = [tuple(typical[f]) if f in typical else None for f in features]

    def sentence(self, j: int, value: float) -> str | None:
        if value != value:  # NaN: no value
            return self.missing[j]
        if (typical := self.typical[j]) is None:
            return None
        median, mean = typical
        above = value > median or value == median and value > mean
        return self.high[j] if above else self.low[j]

    def reason(self, j: int, contribution: float, value: float) -> dict:
        return {"feature": self.features[j], "code": self.codes[j], "sentence": self.sentence(j, value),
                "shap_value": contribution, "feature_value": None if math.isnan(value) else value,
                "direction": "increases risk" if contribution > 0 else "decreases risk"}

    def top(self, contributions: np.ndarray, values: np.ndarray, n: int) -> list[dict]:
        """The n features that moved this score most, either way."""
        order = np.argsort(-np.abs(contributions))[:n]
        return [self.reason(j, float(contributions[j]), float(values[j])) for j in order]

    def principal(self, contributions: np.ndarray, values: np.ndarray) -> list[dict]:
        """The features that raised this score most, at most PRINCIPAL of them, largest first."""
        order = np.argsort(-contributions)[:PRINCIPAL]
        return [self.reason(j, float(contributions[j]), float(values[j])) for j in order if contributions[j] > 0]
