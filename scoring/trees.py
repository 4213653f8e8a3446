"""An XGBoost model's trees, walked by compiled code: probabilities and reason codes for the small
batches a service scores, without XGBoost's per-call cost.

    trees = TreeEnsemble.from_booster(booster)       # once, at load
    probability, contributions = trees.predict(matrix, contributions=True)

Why: XGBoost spends about 0.3 ms in each `predict` call whatever the rows (two calls per batch:
the probability and the contributions), while walking 300 trees of depth 4 for one row takes a
few microseconds. Measured in one process on the churn model, both ways giving the probability
and the approximate contributions: 662 against 16 µs for one row, 790 against 78 µs for 16,
21.8 against 8.7 ms for 1,000.

What it computes is XGBoost's, from XGBoost's own dump of the trees:
- a row goes left where its value (as float32, as a DMatrix holds it) is below the split
  condition, and to the node's default side where it is missing (NaN);
- the margin is the sum of the leaves plus the base score's margin; the probability is its
  sigmoid (`binary:logistic`);
- the contributions are XGBoost's approximate ones (`approx_contribs`, Saabas): along a row's path,
  each split's feature gets the change of the node's mean value, the mean being the leaves'
  weighted by their hessian sums (XGBoost's `FillNodeMeanValues`).
The margin is summed in float32 in XGBoost's order and its sigmoid taken with the C library's
float32 exp, as XGBoost takes it, so the probabilities are XGBoost's bit for bit whichever scored
a batch (the contributions, summed in float64, agree to about 1e-6); a test holds them to it.
Probabilities alone for a large batch (churn-batch) come from XGBoost itself, which is faster there:
3.3 against 6.5 ms for 1,000 rows in one process.
Anything else (another objective or booster, categorical splits, several targets) is refused at
load: exact SHAP values (`explain`) still come from XGBoost.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numba
import numpy as np
import xgboost as xgb

LEAF = -1  # XGBoost's child index of a leaf
XGBOOST_FROM_ROWS = 256  # probabilities alone for this many rows or more: XGBoost's per-row speed beats its per-call cost


class UnsupportedModel(ValueError):
    """A booster the compiled walk would not score as XGBoost does."""


# Compiled once per machine rather than once per worker where NUMBA_CACHE_DIR names a folder
# (the bento's environment and the Makefile set it): about 2.5 s of each worker's start. Without
# it nothing is cached: numba fails at import when asked to cache where it cannot write.
@numba.njit(nogil=True, cache=bool(os.environ.get("NUMBA_CACHE_DIR")))
def _walk(matrix, roots, left, right, feature, threshold, default_left, leaf_value, mean_value, base_margin,
          contributions, with_contributions):
    # float32 sums, in tree order from the base margin, as XGBoost's predictor adds them
    margins = np.zeros(matrix.shape[0], dtype=np.float32)
    for i in range(matrix.shape[0]):
        total = base_margin
        for root in roots:
            node = root
            while left[node] != LEAF:
                x = matrix[i, feature[node]]
                if np.isnan(x):
                    child = left[node] if default_left[node] else right[node]
                elif x < threshold[node]:
                    child = left[node]
                else:
                    child = right[node]
                if with_contributions:
                    contributions[i, feature[node]] += mean_value[child] - mean_value[node]
                node = child
            total += leaf_value[node]
        margins[i] = total
    return margins


@numba.njit(nogil=True, cache=bool(os.environ.get("NUMBA_CACHE_DIR")))
def _probability(margins):
    # the C library's float32 exp, as XGBoost's sigmoid calls it: numpy's own differed in the last bit for
    # 18% of churn's rows, and a replayed decision must come out as the one logged, whichever scored it
    out = np.empty(margins.shape[0], dtype=np.float32)
    for i in range(margins.shape[0]):
        out[i] = np.float32(1.0) / (np.float32(1.0) + math.exp(-margins[i]))
    return out


@dataclass(frozen=True)
class TreeEnsemble:
    """Every tree's nodes in flat arrays (node ids offset by the tree's start; children of a leaf: LEAF)."""

    roots: np.ndarray  # int64 per tree: its first node
    left: np.ndarray  # int64 per node
    right: np.ndarray
    feature: np.ndarray  # int64 per node: the split's column
    threshold: np.ndarray  # float32 per node: go left below it
    default_left: np.ndarray  # bool per node: where a missing value goes
    leaf_value: np.ndarray  # float32 per node (leaves only)
    mean_value: np.ndarray  # float64 per node: its leaves' values weighted by hessian sums
    base_margin: float
    n_features: int
    booster: xgb.Booster

    @classmethod
    def from_booster(cls, booster: xgb.Booster) -> TreeEnsemble:
        config = json.loads(booster.save_config())["learner"]
        learner = json.loads(booster.save_raw("json"))["learner"]
        objective, kind = config["objective"]["name"], config["gradient_booster"]["name"]
        targets = int(config["learner_model_param"].get("num_target", 1))
        if objective != "binary:logistic" or kind != "gbtree" or targets != 1:
            raise UnsupportedModel(f"only single-target gbtree binary:logistic models are walked (this one: {objective}, "
                                   f"{kind}, {targets} targets)")
        trees = learner["gradient_booster"]["model"]["trees"]
        if any(tree["categories_nodes"] for tree in trees):
            raise UnsupportedModel("the model has categorical splits")
        parts: dict[str, list] = {name: [] for name in ("left", "right", "feature", "threshold", "default_left", "leaf_value",
                                                         "mean_value")}
        roots, start = [], 0
        for tree in trees:
            left, right = np.array(tree["left_children"]), np.array(tree["right_children"])
            condition, hessian = np.array(tree["split_conditions"], dtype=np.float64), np.array(tree["sum_hessian"])
            leaf = left == LEAF
            mean = np.where(leaf, condition, 0.0)  # a leaf's split condition holds its value
            for node in range(len(left) - 1, -1, -1):  # XGBoost numbers children after their parent
                if not leaf[node]:
                    mean[node] = (mean[left[node]] * hessian[left[node]] + mean[right[node]] * hessian[right[node]]) / hessian[node]
            roots.append(start)
            parts["left"].append(np.where(leaf, LEAF, left + start))
            parts["right"].append(np.where(leaf, LEAF, right + start))
            parts["feature"].append(np.array(tree["split_indices"]))
            parts["threshold"].append(condition.astype(np.float32))
            parts["default_left"].append(np.array(tree["default_left"], dtype=bool))
            parts["leaf_value"].append(np.where(leaf, condition, 0.0))
            parts["mean_value"].append(mean)
            start += len(left)
        dtypes = {"left": np.int64, "right": np.int64, "feature": np.int64, "threshold": np.float32, "default_left": np.bool_,
                  "leaf_value": np.float32, "mean_value": np.float64}
        base_score = float(config["learner_model_param"]["base_score"].strip("[]"))
        ensemble = cls(np.array(roots, dtype=np.int64), **{name: np.concatenate(parts[name]).astype(dtypes[name]) for name in parts},
                       base_margin=float(np.log(base_score / (1 - base_score))), n_features=booster.num_features(),
                       booster=booster)
        ensemble.predict(np.zeros((1, ensemble.n_features)), contributions=True)  # compiles the walk now, not on a request
        return ensemble

    def predict(self, matrix: np.ndarray, contributions: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Each row's probability and, when asked, each feature's contribution (log-odds, no bias column)."""
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
        if not contributions and len(rows) >= XGBOOST_FROM_ROWS:
            return self.booster.inplace_predict(rows, validate_features=False), None
        out = np.zeros((len(rows), self.n_features) if contributions else (0, 0))
        margins = _walk(rows, self.roots, self.left, self.right, self.feature, self.threshold, self.default_left,
                        self.leaf_value, self.mean_value, np.float32(self.base_margin), out, contributions)
        return _probability(margins), out if contributions else None
