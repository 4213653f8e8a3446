"""What the three families' scorers share, free of BentoML, Feast and the HTTP code: the batch of
rows a reader returns, one store read per batch with the request's overrides, the per-row errors,
the reason codes, and `build_scorer`, which finds a family's scorer in its own module
(scoring/<family>.py, named by core.families).

Each scorer takes the model and the metadata stored with it in the registry (calibration,
risk cut-offs, threshold, segment names, feature list) and a feature reader, so it can be tested
with a five-line fake reader:

    class FakeReader:
        def read(self, service, rows):
            return OnlineFeatures.from_columns({"days_since_last_txn": [3.0] * len(rows), ...}, stored=[...])

A request is a dict: {"customer_id": ..., "features": {name: value} (overrides), and for fraud
"request_data": the transaction's fields}. A result is a dict; an unknown customer gets {"error": "unknown_customer"}.

A request that carries every feature of the version is scored as given, whether the store knows
the customer or not: a prospect (an applicant with no history yet) is scored that way, and so is
a full feature vector sent through the Open Inference Protocol. An unknown customer with only some
features is not scored ({"error": "incomplete_features"} naming the missing ones): a score from a
few of a model's features, the rest taken as missing, is not one a bank should act on.

XGBoost and the compiled tree walk (scoring/trees.py) are imported when a scorer is built, not
with this module: the `bentoml serve` process that only reads the service's definition (and then
starts the workers) never needs them, and a server starts about 4 s sooner.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from core.families import FAMILIES

if TYPE_CHECKING:
    import xgboost as xgb

UNKNOWN_CUSTOMER = "unknown_customer"
INCOMPLETE_FEATURES = "incomplete_features"
INVALID_FEATURE = "invalid_feature"
UNKNOWN_VERSION = "unknown_version"
STALE_FEATURES = "stale_features"
TS_SUFFIX = "__ts"  # a reader's key of a feature view's event times (epoch seconds; 0: no row)
STALE_POLICIES = ("mark", "refuse", "review")
FEATURES_KEY = "_features"  # where a scorer puts a row's feature vector when asked to keep it (the inference log)


@dataclass
class OnlineFeatures:
    """What the store holds for a batch of rows, one position per row."""

    values: dict[str, np.ndarray | list]  # per feature: floats (NaN: no value), or Python values (None: no value);
    # per feature view, `<view>__ts`: its event time in epoch seconds (0: none)
    found: np.ndarray  # bool per row: the store knows the customer

    @classmethod
    def from_columns(cls, values: dict[str, list], stored: list[str]) -> OnlineFeatures:
        """From lists with None where the store has nothing: a row is found when any stored feature has a value."""
        n = len(next(iter(values.values()))) if values else 0
        found = np.array([any(values[name][i] is not None for name in stored) for i in range(n)], dtype=bool)
        return cls(values, found if stored else np.ones(n, dtype=bool))


class StoreUnavailable(Exception):
    """The online store did not answer a read: down, unreachable, or slower than the timeout."""


class FeaturesUnreadable(Exception):
    """The online store answered, but refused the read of one FeatureService (SQLite: a view's table
    is not there). Only the versions that read that service fail; the store is not down."""


class FeatureReader(Protocol):
    def read(self, feature_service: str, rows: list[dict]) -> OnlineFeatures:
        """The service's features for each row, and whether the store knows each row's customer."""


@dataclass(frozen=True)
class Freshness:
    """How old each feature view may be, and what a row with an older one gets: `mark` (scored, the
    view named in `stale_views`), `refuse` (not scored: the stale_features error, a 503), or
    `review` (fraud: scored, its outcome at least review)."""

    max_age_s: dict[str, float]  # per feature view; a view not named has no limit
    policy: str = "mark"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str  # registry version
    role: str  # champion or challenger: the registry alias it is served under
    feature_service: str

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "role": self.role, "feature_service": self.feature_service}


@dataclass
class Assembled:
    matrix: np.ndarray  # rows x features, NaN where a default (the model's missing-value branch) applies
    known: np.ndarray  # bool per row: the store knows the customer
    invalid: list[list[str]]  # per row: override names the model does not have (or may not override)
    sources: list[dict[str, list[str]]]  # per row: {"request": [...], "default": [...]} (the rest: store)
    missing: list[list[str]]  # per row the store does not know: the features its request lacks to be scored as given
    ages: dict[str, np.ndarray]  # per feature view read: each row's age in seconds (NaN: no row, or scored as given)
    stale: list[list[str]]  # per row: the views older than their maximum age
    policy: str = "mark"  # the Freshness policy the stale rows get
    _rounded: dict[str, list] | None = field(default=None, repr=False)  # the ages as answers give them, made once

    def freshness(self, i: int) -> dict:
        """Row i's feature ages and stale views, as a result carries them."""
        if self._rounded is None:  # once per batch, as Python floats: numpy's scalars cost a microsecond a call
            self._rounded = {view: [None if a != a else round(a, 1) for a in age.tolist()] for view, age in self.ages.items()}
        return {"feature_age_s": {view: ages[i] for view, ages in self._rounded.items()}, "stale_views": self.stale[i]}


def assemble(reader: FeatureReader, info: ModelInfo, features: list[str], requests: list[dict],
             store_only: frozenset[str] = frozenset(), freshness: Freshness | None = None) -> Assembled:
    """One store read for the whole batch; request overrides win; missing values become NaN; each
    feature view's age per row, and the views older than `freshness` allows.

    A customer is unknown when the store has none of the stored features for it; a request with
    every feature is scored as given (`store_only` then does not apply: nothing is taken from the store,
    and no view is stale)."""
    rows = [{"customer_id": r["customer_id"], **r.get("request_data", {})} for r in requests]
    read = reader.read(info.feature_service, rows)
    matrix = np.column_stack([as_floats(read.values[name]) for name in features]) if requests else np.empty((0, len(features)))
    defaulted = np.isnan(matrix)
    known = np.array(read.found, dtype=bool)
    allowed, every = set(features) - store_only, set(features)
    column = {name: j for j, name in enumerate(features)}
    invalid: list[list[str]] = [[] for _ in requests]
    missing: list[list[str]] = [[] for _ in requests]
    from_request: list[list[str]] = [[] for _ in requests]
    for i, request in enumerate(requests):
        if overrides := request.get("features"):
            whole = every <= overrides.keys()
            invalid[i] = sorted(overrides.keys() - (every if whole else allowed))
            from_request[i] = [name for name in features if name in overrides and (whole or name in allowed)]
            for name in from_request[i]:
                matrix[i, column[name]] = overrides[name]
                defaulted[i, column[name]] = False
            if not known[i]:
                known[i] = whole
                missing[i] = [] if whole else [name for name in features if name not in overrides]
    some_default = defaulted.any(axis=1)
    sources = [{"request": from_request[i], "default": [features[j] for j in np.flatnonzero(defaulted[i])] if some_default[i] else []}
               for i in range(len(requests))]
    ages = feature_ages(read.values)
    whole = np.array([len(names) == len(features) for names in from_request], dtype=bool)
    for age in ages.values():
        age[whole] = np.nan  # scored as given: the store's rows were not used
    stale: list[list[str]] = [[] for _ in requests]
    if freshness is not None:
        for view, limit in freshness.max_age_s.items():
            if view in ages:
                for i in np.flatnonzero(ages[view] > limit):
                    stale[i].append(view)
    return Assembled(matrix, known, invalid, sources, missing, ages, stale, freshness.policy if freshness else "mark")


def feature_ages(values: dict) -> dict[str, np.ndarray]:
    """Each feature view's age per row, in seconds from now, NaN where the view has no row."""
    now = time.time()
    ages = {}
    for key, column in values.items():
        if key.endswith(TS_SUFFIX) and key != "customer_id" + TS_SUFFIX:
            stamps = np.asarray(column, dtype=float)
            ages[key.removesuffix(TS_SUFFIX)] = np.where(stamps > 0, now - stamps, np.nan)
    return ages


def as_floats(column: np.ndarray | list) -> np.ndarray:
    """A feature column as floats, NaN where the store had no value."""
    if isinstance(column, np.ndarray) and column.dtype == np.float64:
        return column
    return np.array([np.nan if value is None else value for value in column], dtype=float)


def request_error(a: Assembled, i: int, customer_id: str, info: ModelInfo) -> dict | None:
    """The error result of row i, if the row cannot be scored (naming the version that was asked)."""
    if a.invalid[i]:
        return {"customer_id": customer_id, "error": INVALID_FEATURE, "fields": [f"features.{n}" for n in a.invalid[i]],
                "model": info.as_dict()}
    if a.missing[i]:
        return {"customer_id": customer_id, "error": INCOMPLETE_FEATURES, "fields": [f"features.{n}" for n in a.missing[i]],
                "model": info.as_dict()}
    if not a.known[i]:
        return {"customer_id": customer_id, "error": UNKNOWN_CUSTOMER, "model": info.as_dict()}
    if a.stale[i] and a.policy == "refuse":
        return {"customer_id": customer_id, "error": STALE_FEATURES, "views": a.stale[i],
                "model": info.as_dict(), **a.freshness(i)}
    return None


def row_results(a: Assembled, requests: list[dict], info: ModelInfo, scored, keep_features: bool) -> list[dict]:
    """Each row's result: its error, or `scored(i, customer_id)`, with the row's feature vector
    (NaN where a default applied) for the inference log when asked to keep it."""
    results = []
    for i, request in enumerate(requests):
        if error := request_error(a, i, request["customer_id"], info):
            results.append(error)
            continue
        result = scored(i, request["customer_id"])
        result.update(a.freshness(i))
        if keep_features:
            result[FEATURES_KEY] = a.matrix[i]
        results.append(result)
    return results


def in_booster_order(booster: xgb.Booster, features: list[str]) -> None:
    """Refuse a model whose features are not the stored feature list, in order: the scorers hand
    XGBoost bare matrices, whose columns are that list."""
    if booster.feature_names and list(booster.feature_names) != list(features):
        raise ValueError(f"the booster's features {booster.feature_names} are not the model's feature list {features}")


def exact_contributions(booster: xgb.Booster, matrix: np.ndarray, bias: bool = False) -> np.ndarray:
    """Each feature's SHAP value (log-odds; the bias, the model's mean output, as a last column when
    `bias`), from XGBoost's TreeSHAP on one thread: with its default (every core), OpenMP's idle
    threads spin on the cores the event loop needs."""
    import xgboost as xgb

    contributions = booster.predict(xgb.DMatrix(matrix, nthread=1), pred_contribs=True, validate_features=False)
    return contributions if bias else contributions[:, :-1]


def tree_ensemble(booster: xgb.Booster):
    from scoring.trees import TreeEnsemble

    return TreeEnsemble.from_booster(booster)




def load_booster(model_dir):
    """An XGBoost booster from the version's UBJSON file, one thread per worker (for the tree walk
    and SHAP): nothing is unpickled."""
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(model_dir / "model.ubj"))
    booster.set_param({"nthread": 1})
    return booster


def family_module(family: str):
    """The module of a family's scorer and model loader: scoring/<family>.py."""
    return importlib.import_module(FAMILIES[family].scorer_module)


def build_scorer(loaded, info: ModelInfo, reader: FeatureReader, top_reasons: int):
    """The scorer of a loaded version (scoring/loading.py), as its family's module builds it."""
    return family_module(loaded.family).build(loaded, info, reader, top_reasons)
