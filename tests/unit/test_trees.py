"""The compiled tree walk against XGBoost itself, on boosters trained here."""

import numpy as np
import pytest
import xgboost as xgb

from scoring.trees import TreeEnsemble, UnsupportedModel


def training_data(rng, rows=3000, features=6):
    x = rng.normal(size=(rows, features))
    x[rng.random(x.shape) < 0.15] = np.nan  # missing values take each split's default side
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2]) + rng.normal(0, 0.5, rows) > 0).astype(int)
    return x, y


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(7)
    x, y = training_data(rng)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 5, "eta": 0.3, "base_score": 0.3},
                        xgb.DMatrix(x, y), 60)
    held_out, _ = training_data(rng, rows=1000)
    held_out[:5] = np.nan  # rows with nothing known
    return booster, held_out


def test_probabilities_and_reason_contributions_are_xgboosts(trained):
    booster, x = trained
    data = xgb.DMatrix(x)
    probability, contributions = TreeEnsemble.from_booster(booster).predict(x, contributions=True)
    np.testing.assert_array_equal(probability, booster.predict(data))  # bit for bit: a replayed score is the logged one
    expected = booster.predict(data, pred_contribs=True, approx_contribs=True)[:, :-1]
    np.testing.assert_allclose(contributions, expected, atol=1e-5)


def test_a_value_on_a_split_goes_right_as_in_xgboost(trained):
    booster, x = trained
    trees = TreeEnsemble.from_booster(booster)
    split = trees.left != -1
    rows = x[:50].copy()
    rows[:, trees.feature[split][0]] = trees.threshold[split][0]  # exactly on a threshold: not below it
    np.testing.assert_allclose(trees.predict(rows)[0], booster.predict(xgb.DMatrix(rows)), atol=1e-6)


@pytest.mark.parametrize("rows", [3, 1000])  # the walk, and XGBoost for large batches
def test_without_contributions_only_xgboosts_probability_comes_back(trained, rows):
    booster, x = trained
    probability, contributions = TreeEnsemble.from_booster(booster).predict(x[:rows])
    assert contributions is None and probability.shape == (rows,)
    np.testing.assert_array_equal(probability, booster.predict(xgb.DMatrix(x[:rows])))


@pytest.mark.parametrize("params", [{"objective": "reg:squarederror"}, {"objective": "binary:logistic", "booster": "dart"}])
def test_a_model_the_walk_would_score_differently_is_refused(params):
    rng = np.random.default_rng(1)
    x, y = training_data(rng, rows=200)
    booster = xgb.train({**params, "max_depth": 2}, xgb.DMatrix(x, y), 3)
    with pytest.raises(UnsupportedModel, match=params.get("booster", params["objective"])):
        TreeEnsemble.from_booster(booster)


def test_categorical_splits_are_refused():
    import pandas as pd

    frame = pd.DataFrame({"channel": pd.Categorical(["web", "app", "pos"] * 100), "amount": np.arange(300.0)})
    data = xgb.DMatrix(frame, (np.arange(300) % 3 == 0).astype(int), enable_categorical=True)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "max_cat_to_onehot": 1}, data, 3)
    with pytest.raises(UnsupportedModel, match="categorical"):
        TreeEnsemble.from_booster(booster)
