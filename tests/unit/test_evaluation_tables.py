"""The evaluation tables training stores beside each version, which the dashboard draws."""

import numpy as np
import pandas as pd
import pytest

from core.feature_sets import SEGMENT_FEATURES
from training.models import calibration_table, precision_recall_table, train_segment


def test_the_calibration_table_bins_by_prediction_and_counts_every_row():
    rng = np.random.default_rng(0)
    p = rng.random(5_000)
    y = (rng.random(5_000) < p).astype(int)
    table = calibration_table(y, p, bins=10)
    assert len(table) == 10 and table["rows"].sum() == 5_000
    assert table["mean_predicted"].is_monotonic_increasing
    assert np.abs(table["observed_rate"] - table["mean_predicted"]).max() < 0.06  # calibrated by construction


def test_precision_and_recall_at_each_threshold_are_those_of_flagging_above_it():
    rng = np.random.default_rng(1)
    p = rng.random(2_000)
    y = (rng.random(2_000) < p ** 2).astype(int)
    table = precision_recall_table(y, p, points=11)
    assert table["threshold"].tolist() == pytest.approx([i / 10 for i in range(11)])
    for row in table.iloc[[0, 3, 7]].itertuples():
        flagged = p >= row.threshold
        assert row.precision == pytest.approx(y[flagged].mean())
        assert row.recall == pytest.approx(flagged[y == 1].mean())
    assert table["recall"].is_monotonic_decreasing and table["recall"].iloc[0] == 1.0


def test_segment_profiles_are_centres_in_business_units():
    rng = np.random.default_rng(2)
    low = pd.DataFrame(rng.uniform(0, 1, (300, len(SEGMENT_FEATURES))), columns=SEGMENT_FEATURES)
    high = pd.DataFrame(rng.uniform(99, 101, (300, len(SEGMENT_FEATURES))), columns=SEGMENT_FEATURES)
    trained = train_segment(pd.concat([low, high], ignore_index=True), range(2, 3))
    profiles = trained.artifacts["segment_profiles"].sort_values("spend_90d")
    assert profiles["share"].tolist() == pytest.approx([0.5, 0.5])
    assert profiles["spend_90d"].iloc[0] < 1.5 and 95 < profiles["spend_90d"].iloc[1] < 105
    assert set(profiles["segment_name"]) == set(trained.metadata["segment_names"].values())
