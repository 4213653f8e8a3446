"""Scoring logic with a fake feature reader and a tiny real booster (no Feast, no BentoML)."""

import time

import numpy as np
import pytest
import xgboost as xgb

from core.decisions import calibrate
from core.rules import Rule, Rules
from scoring.base import INCOMPLETE_FEATURES, INVALID_FEATURE, STALE_FEATURES, UNKNOWN_CUSTOMER, Freshness, ModelInfo, OnlineFeatures
from scoring.churn import ChurnScorer
from scoring.fraud import FraudScorer

FEATURES = ["days_since_last_txn", "txn_count_30d", "spend_30d"]


class FakeReader:
    """Knows customers A and B; counts its reads."""

    STORE = {"A": [2.0, 10.0, 300.0], "B": [85.0, 1.0, 20.0]}

    def __init__(self):
        self.reads = 0

    def read(self, feature_service, rows):
        self.reads += 1
        out = {name: [] for name in FEATURES}
        for row in rows:
            values = self.STORE.get(row["customer_id"], [None] * len(FEATURES))
            for name, value in zip(FEATURES, values):
                out[name].append(value)
        return OnlineFeatures.from_columns(out, FEATURES)


@pytest.fixture(scope="module")
def booster():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, [90, 30, 1000], size=(2000, 3))
    y = (x[:, 0] + rng.normal(0, 10, 2000) > 45).astype(int)
    return xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, y, feature_names=FEATURES), 30)


@pytest.fixture
def churn(booster):
    metadata = {"features": FEATURES, "calibration": {"a": 1.0, "b": 0.0},
                "risk_cutoffs": {"medium": 0.2, "high": 0.5, "critical": 0.8}}
    return ChurnScorer(booster, metadata, ModelInfo("churn", "3", "champion", "churn_v1"), FakeReader(), top_n=2)


def test_a_batch_is_one_store_read_and_each_request_gets_its_own_result(churn):
    results = churn.score([{"customer_id": "A"}, {"customer_id": "B"}, {"customer_id": "A", "features": {"days_since_last_txn": 80}}])
    assert churn.reader.reads == 1
    assert [r["customer_id"] for r in results] == ["A", "B", "A"]
    assert results[0]["churn_probability"] < 0.2  # below the medium cut-off
    assert results[1]["churn_probability"] >= 0.8  # at or above the critical one
    assert results[1]["risk_level"] == "critical" and results[0]["risk_level"] == "low"
    assert results[2]["churn_probability"] > results[0]["churn_probability"]
    assert results[0]["model"] == {"name": "churn", "version": "3", "role": "champion", "feature_service": "churn_v1"}


def test_sources_say_where_each_feature_came_from(churn):
    [result] = churn.score([{"customer_id": "A", "features": {"spend_30d": 1.0}}])
    assert result["feature_sources"] == {"request": ["spend_30d"], "default": []}


def test_reason_codes_name_the_strongest_features(churn):
    [result] = churn.score([{"customer_id": "B"}])
    reasons = result["reasons"]
    assert len(reasons) == 2 and reasons[0]["feature"] == "days_since_last_txn"
    assert reasons[0]["direction"] == "increases risk" and reasons[0]["feature_value"] == 85.0
    assert abs(reasons[0]["shap_value"]) >= abs(reasons[1]["shap_value"])


def test_unknown_customers_and_unknown_features_are_errors_not_scores(churn):
    unknown, invalid = churn.score([{"customer_id": "Z"}, {"customer_id": "A", "features": {"nope": 1.0}}])
    assert unknown == {"customer_id": "Z", "error": UNKNOWN_CUSTOMER, "model": churn.info.as_dict()}
    assert invalid["error"] == INVALID_FEATURE and invalid["fields"] == ["features.nope"]


def test_a_prospect_with_every_feature_is_scored_as_given_and_one_with_some_is_told_what_is_missing(churn):
    as_customer = dict(zip(FEATURES, FakeReader.STORE["B"]))
    known, prospect, partial = churn.score([{"customer_id": "B"}, {"customer_id": "NEW1", "features": as_customer},
                                            {"customer_id": "NEW2", "features": {"spend_30d": 20.0}}])
    assert prospect["churn_probability"] == known["churn_probability"] and prospect["risk_level"] == known["risk_level"]
    assert prospect["feature_sources"] == {"request": FEATURES, "default": []}
    assert partial == {"customer_id": "NEW2", "error": INCOMPLETE_FEATURES, "model": churn.info.as_dict(),
                       "fields": ["features.days_since_last_txn", "features.txn_count_30d"]}


def test_a_whole_vector_may_hold_the_features_a_request_cannot_override_alone(booster, monkeypatch):
    """Fraud's request-time features come from the transaction; a request with every feature is
    scored as given, those too, and one that overrides only them is refused as before."""
    monkeypatch.setattr("scoring.fraud.REQUEST_TIME_FEATURES", frozenset({"spend_30d"}))  # one of these features
    metadata = {"features": FEATURES, "threshold": 0.5}
    scorer = FraudScorer(booster, metadata, ModelInfo("fraud", "1", "champion", "fraud_v1"), FakeReader())
    whole, alone = scorer.score([{"customer_id": "A", "features": dict(zip(FEATURES, FakeReader.STORE["B"]))},
                                 {"customer_id": "A", "features": {"spend_30d": 5.0}}])
    [as_b] = scorer.score([{"customer_id": "B"}])
    assert whole["fraud_probability"] == as_b["fraud_probability"]
    assert alone["error"] == INVALID_FEATURE and alone["fields"] == ["features.spend_30d"]


def test_exact_explanations_add_up_to_the_margin(churn, booster):
    explained = churn.explain("B")
    assert [v["feature"] for v in explained["values"]] == FEATURES
    row = xgb.DMatrix(np.array([FakeReader.STORE["B"]]), feature_names=FEATURES)
    bias = booster.predict(row, pred_contribs=True)[0, -1]
    total = sum(v["shap_value"] for v in explained["values"]) + bias
    assert total == pytest.approx(float(booster.predict(row, output_margin=True)[0]), abs=1e-4)


def test_a_version_with_one_threshold_accepts_below_it_and_blocks_from_it(booster):
    """A version registered before outcomes existed: its raw probability, review and block both at its threshold."""
    metadata = {"features": FEATURES, "threshold": 0.5}
    scorer = FraudScorer(booster, metadata, ModelInfo("fraud", "1", "champion", "fraud_v1"), FakeReader())
    low, high = scorer.score([{"customer_id": "A"}, {"customer_id": "B"}])
    assert (low["outcome"], high["outcome"]) == ("accept", "block")
    assert low["is_fraud"] is False and high["is_fraud"] is True and high["threshold"] == high["block_threshold"] == 0.5


def test_the_fraud_outcome_is_the_calibrated_probability_at_the_two_thresholds(booster):
    raw = booster.predict(xgb.DMatrix(np.array([FakeReader.STORE["A"], FakeReader.STORE["B"]]), feature_names=FEATURES))
    calibration = {"method": "platt", "a": 0.8, "b": -1.5}
    p_a, p_b = calibrate(raw, calibration)
    review, block = (p_a + p_b) / 2, p_b + 1e-4  # A below review, B between review and block
    metadata = {"features": FEATURES, "threshold": review, "calibration": calibration,
                "outcome_thresholds": {"review": review, "block": block}}
    scorer = FraudScorer(booster, metadata, ModelInfo("fraud", "4", "champion", "fraud_v1"), FakeReader())
    a, b = scorer.score([{"customer_id": "A"}, {"customer_id": "B"}])
    assert a["fraud_probability"] == pytest.approx(p_a) and b["fraud_probability"] == pytest.approx(p_b)
    assert (a["outcome"], b["outcome"]) == ("accept", "review") and (a["is_fraud"], b["is_fraud"]) == (False, True)
    assert (b["threshold"], b["block_threshold"]) == (review, block)
    assert a["principal_reasons"] == [] and b["principal_reasons"]  # review is adverse, accept is not
    metadata["outcome_thresholds"]["block"] = p_b - 1e-4
    assert FraudScorer(booster, metadata, ModelInfo("fraud", "4", "champion", "fraud_v1"), FakeReader()).score(
        [{"customer_id": "B"}])[0]["outcome"] == "block"


def test_a_rule_that_hits_raises_the_outcome_never_lowers_it_and_is_named(booster):
    rules = Rules(7, (
        Rule("denied-customer", "RUL01", "customer_id", "block", "Denied", deny=frozenset({"C-DENIED"})),
        Rule("large-amount", "RUL04", "amount", "review", "Large", above=1000.0),
        Rule("velocity-1h", "RUL05", "prev_txn_count_1h", "block", "Fast", above=0.0),  # a feature this version lacks
    ))
    metadata = {"features": FEATURES, "threshold": 0.5}
    scorer = FraudScorer(booster, metadata, ModelInfo("fraud", "1", "champion", "fraud_v1"), FakeReader())
    scorer.use_rules(rules)
    small, large, blocked_large = scorer.score([
        {"customer_id": "A", "request_data": {"amount": 10.0}}, {"customer_id": "A", "request_data": {"amount": 5000.0}},
        {"customer_id": "B", "request_data": {"amount": 5000.0}}])
    assert (small["outcome"], small["rules"]) == ("accept", [])
    assert large["outcome"] == "review" and [h["rule"] for h in large["rules"]] == ["large-amount"]
    assert large["principal_reasons"]  # the outcome is adverse, whichever part decided it
    assert blocked_large["outcome"] == "block" and large["rules"][0] == {
        "rule": "large-amount", "code": "RUL04", "outcome": "review", "sentence": "Large"}
    store = FakeReader.STORE
    store["C-DENIED"] = store["A"]
    try:
        [denied] = scorer.score([{"customer_id": "C-DENIED", "request_data": {"amount": 1.0}}])
    finally:
        del store["C-DENIED"]
    assert denied["outcome"] == "block" and [h["rule"] for h in denied["rules"]] == ["denied-customer"]


def test_stored_values_convert_as_feast_converts_them():
    from feast.protos.feast.types.Value_pb2 import Null, Value
    from feast.type_map import feast_value_type_to_python_type

    from bentos.online import python_value

    for value in (Value(double_val=2.5), Value(int64_val=7), Value(string_val="GB"), Value(bool_val=True),
                  Value(double_val=0.0), Value()):
        assert python_value(value) == feast_value_type_to_python_type(value), value
    assert python_value(None) is None
    # An explicit null is missing, not zero (the SDK says 0; materialized data holds no such value)
    assert python_value(Value(null_val=Null.NULL)) is None


def test_a_column_of_stored_values_decodes_at_once_as_the_sdk_converts_it_one_by_one():
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    from bentos.online import decode_column

    doubles = [Value(double_val=x).SerializeToString() for x in (2.5, 0.0, -1e300, float("nan"))] + [None]
    column = decode_column(doubles)
    assert isinstance(column, np.ndarray) and column.dtype == np.float64
    expected = [feast_value_type_to_python_type(Value.FromString(b)) for b in doubles[:4]] + [float("nan")]
    np.testing.assert_array_equal(column, np.array(expected))  # NaN stays NaN; no value is NaN too
    for values in ([Value(int64_val=7), Value(int64_val=-3)], [Value(string_val="GB"), Value(string_val="a|b")],
                   [Value(double_val=1.0), Value(int64_val=2)], [Value(float_val=1.5)]):
        blobs = [v.SerializeToString() for v in values] + [None]
        assert decode_column(blobs) == [feast_value_type_to_python_type(v) for v in values] + [None]


def test_a_model_whose_feature_list_is_not_its_boosters_is_refused(booster):
    metadata = {"features": list(reversed(FEATURES)), "calibration": {"a": 1.0, "b": 0.0},
                "risk_cutoffs": {"medium": 0.2, "high": 0.5, "critical": 0.8}}
    with pytest.raises(ValueError, match="not the model's feature list"):
        ChurnScorer(booster, metadata, ModelInfo("churn", "3", "champion", "churn_v1"), FakeReader())


def test_a_whole_batch_decodes_at_once_as_each_column_does_alone():
    from feast.protos.feast.types.Value_pb2 import Value

    from bentos.online import decode_column, decode_columns

    def blob(x):
        return None if x is None else Value(double_val=x).SerializeToString()

    full = [[blob(1.0), blob(2.0)], [blob(3.0), blob(float("nan"))]]
    gaps = [[blob(1.0), None], [None, blob(-4.5)], [None, None], [blob(7.0), None]]
    crossed = [[None, blob(1.0)], [blob(2.0), None]]  # column by column, the values are not in row order
    mixed = [[blob(1.0), None], [Value(string_val="GB").SerializeToString(), None]]
    for columns in (full, gaps, crossed, mixed, [[], []]):
        together, alone = decode_columns(columns), [decode_column(list(c)) for c in columns]
        assert len(together) == len(alone)
        for a, b in zip(together, alone):
            if isinstance(b, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b


def test_the_redis_read_encodes_its_commands_as_hiredis_does():
    import hiredis

    from bentos.online import pack_hmgets

    fields = [b"\x8f\x02\x00\x11", b"_ts:customer_activity", b""]
    keys = [b"\x02\x00\x00\x00customer_id\x00C0000001fintech", b"k" * 300, b""]
    assert pack_hmgets(keys, fields) == b"".join(hiredis.pack_command((b"HMGET", key, *fields)) for key in keys)
    assert pack_hmgets([], fields) == b""


def sqlite_view(rows: list[tuple[bytes, str, bytes | None]]):
    """A table as Feast's SQLite online store keeps a view: a row per customer and feature."""
    import sqlite3

    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (entity_key BLOB, feature_name TEXT, value BLOB, event_ts timestamp, "
                       "PRIMARY KEY (entity_key, feature_name))")
    connection.executemany("INSERT INTO t VALUES (?, ?, ?, 1700000000)", rows)
    return connection


def test_a_views_float_features_are_read_a_customer_a_row_and_decoded_at_once():
    from feast.protos.feast.types.Value_pb2 import Value

    from bentos.online import float_rows

    def double(x):
        return Value(double_val=x).SerializeToString()

    connection = sqlite_view([(b"A", "spend", double(3.5)), (b"A", "count", double(2.0)), (b"A", "seen", Value(string_val="x,y").SerializeToString()),
                              (b"B", "count", double(0.0)), (b"B", "spend", double(-1.0)), (b"B", "seen", b"")])
    values, seconds = float_rows(connection, "t", ("count", "spend"), [b"B", b"nobody", b"A"])
    np.testing.assert_array_equal(values["count"], [0.0, np.nan, 2.0])  # the string feature it does not read is left alone
    np.testing.assert_array_equal(values["spend"], [-1.0, np.nan, 3.5])
    assert seconds.tolist() == [1700000000, 0, 1700000000]
    # a value that is not a Float64, or a customer without one of the features: read row by row instead
    assert float_rows(connection, "t", ("count", "seen"), [b"A", b"B"]) is None
    nine_bytes_not_a_double = Value(string_val="abcdefg").SerializeToString()
    connection.execute("UPDATE t SET value = ? WHERE entity_key = x'41' AND feature_name = 'count'", [nine_bytes_not_a_double])
    assert float_rows(connection, "t", ("count", "spend"), [b"A", b"B"]) is None
    connection.execute("UPDATE t SET value = ? WHERE entity_key = x'41' AND feature_name = 'count'", [double(2.0)])
    connection.execute("DELETE FROM t WHERE entity_key = x'42' AND feature_name = 'spend'")
    assert float_rows(connection, "t", ("count", "spend"), [b"A", b"B"]) is None


class Planted:
    """Unpickled, it would write a file: the proof that the loader ran a version's code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("metadata", [None, {"segment_model": {"transform": "log1p", "mean": [0.0], "scale": [1.0],
                                                                 "centres": [[0.0], [2.0]]}}])
def test_a_segment_version_is_loaded_from_its_numbers_and_its_pickle_is_never_opened(tmp_path, metadata):
    import pickle

    import yaml

    from scoring.loading import load_model

    marker = tmp_path / "code-ran"
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Planted(str(marker))))
    mlmodel = {"flavors": {"sklearn": {"pickled_model": "model.pkl", "serialization_format": "cloudpickle"}},
               "utc_time_created": "2026-12-06 00:00:00.000000", **({"metadata": metadata} if metadata else {})}
    (tmp_path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    if metadata is None:
        with pytest.raises(ValueError, match="no segment_model"):
            load_model("segment", tmp_path)
    else:
        assert load_model("segment", tmp_path).predict(np.array([[0.1], [5.0]])).tolist() == [0, 1]
    assert not marker.exists()


class AgedReader(FakeReader):
    """FakeReader whose rows carry their views' event times: A's activity row is a minute old, B's
    a day; neither has a row of the stream view."""

    def read(self, feature_service, rows):
        features = super().read(feature_service, rows)
        now = time.time()
        age = {"A": 60.0, "B": 86_400.0}
        features.values["customer_activity__ts"] = np.array([now - age[r["customer_id"]] if r["customer_id"] in age else 0
                                                             for r in rows])
        features.values["customer_stream__ts"] = np.zeros(len(rows))
        return features


def test_each_answer_says_how_old_each_view_is_and_marks_the_stale_ones(churn):
    churn.reader = AgedReader()
    fresh, aged, given = churn.score([{"customer_id": "A"}, {"customer_id": "B"},
                                      {"customer_id": "NEW", "features": dict(zip(FEATURES, [1.0, 2.0, 3.0]))}])
    assert fresh["feature_age_s"]["customer_activity"] == pytest.approx(60, abs=5) and fresh["feature_age_s"]["customer_stream"] is None
    assert fresh["stale_views"] == aged["stale_views"] == []  # no limits: nothing is stale
    assert given["feature_age_s"] == {"customer_activity": None, "customer_stream": None}  # scored as given
    churn.freshness = Freshness({"customer_activity": 3600.0, "customer_stream": 1.0})
    marked = churn.score([{"customer_id": "A"}, {"customer_id": "B"}])
    assert [r["stale_views"] for r in marked] == [[], ["customer_activity"]]  # a view with no row is not stale
    assert marked[1]["churn_probability"] == aged["churn_probability"]  # marked, scored as before


def test_a_refusing_family_answers_the_stale_row_with_its_views_and_scores_the_rest(churn):
    churn.reader, churn.freshness = AgedReader(), Freshness({"customer_activity": 3600.0}, "refuse")
    fresh, aged = churn.score([{"customer_id": "A"}, {"customer_id": "B"}])
    assert "churn_probability" in fresh and fresh["stale_views"] == []
    assert aged["error"] == STALE_FEATURES and aged["views"] == ["customer_activity"] and "churn_probability" not in aged


def test_fraud_reviews_a_transaction_whose_features_are_stale(booster):
    metadata = {"features": FEATURES, "threshold": 1.0}  # both accepted on their scores
    scorer = FraudScorer(booster, metadata, ModelInfo("fraud", "1", "champion", "fraud_v1"), AgedReader())
    scorer.freshness = Freshness({"customer_activity": 3600.0}, "review")
    fresh, aged = scorer.score([{"customer_id": "A"}, {"customer_id": "B"}])
    assert (fresh["outcome"], aged["outcome"]) == ("accept", "review") and aged["stale_views"] == ["customer_activity"]
    assert aged["principal_reasons"]  # review is adverse
