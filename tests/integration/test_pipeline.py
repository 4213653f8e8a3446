"""The whole offline pipeline on a small data set in a temporary folder, with a real Feast store
(SQLite, then Redis), a real MLflow registry (SQLite backend) and a real redis-server."""

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow import MlflowClient

from core.feature_sets import CHURN_FEATURES, FRAUD_V2_FEATURES, SEGMENT_FEATURES
from core.realtime import OUTPUT_FEATURES, transaction_features
from core.registry import mlflow_client
from core.stream_features import STREAM_FEATURES
from loadtests.servers import ROOT
from scoring.loading import from_registry
from training import store
from training.pipeline import train_all, train_candidate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


from tests.integration.conftest import latest_rows


def test_feature_summary_counts_everything(built):
    summary, _ = built
    assert summary["rejected_rows"] == 0 and summary["accepted_rows"] > 100_000
    assert summary["features"] >= 50 and summary["labelled_rows"] > 0


def test_feast_registry_holds_the_repo(built, settings):
    fs = store.open_store(settings)
    assert {s.name for s in fs.list_feature_services()} == {"churn_v1", "fraud_v1", "fraud_v2", "segment_v1"}
    assert {v.name for v in fs.list_feature_views()} == {"customer_activity", "customer_spend_mix", "customer_risk_profile",
                                                         "customer_stream"}
    assert {v.name for v in fs.list_on_demand_feature_views()} == {"transaction_context", "transaction_recent_activity"}
    assert {"customer_activity_push", "customer_stream_push"} <= {s.name for s in fs.list_data_sources()}
    for obj in [*fs.list_feature_views(), *fs.list_feature_services(), *fs.list_on_demand_feature_views()]:
        assert obj.description and obj.owner, obj.name


def test_historical_retrieval_is_point_in_time(built, settings, table):
    fs = store.open_store(settings)
    snapshots = sorted(table["event_timestamp"].unique())
    customer = table["customer_id"].iloc[0]
    # a day after the 2nd snapshot, the join must return the 2nd snapshot's values, not the 3rd's
    when = pd.Timestamp(snapshots[1]) + pd.Timedelta(days=1)
    got = store.historical_features(fs, pd.DataFrame({"customer_id": [customer], "event_timestamp": [when]}), "segment_v1")
    expected = table[(table["customer_id"] == customer) & (table["event_timestamp"] == snapshots[1])]
    np.testing.assert_allclose(got[SEGMENT_FEATURES].to_numpy(), expected[SEGMENT_FEATURES].to_numpy())


def test_models_are_registered_with_champion_on_their_first_version(built, settings):
    _, first = built
    client = MlflowClient(settings.tracking_uri)
    for name in ("churn", "fraud", "segment"):
        assert first[name]["registered"]["version"] == "1"
        assert first[name]["registered"]["aliases"] == ["champion"]
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert first["churn"]["metrics"]["test_roc_auc"] > 0.8


def test_churn_model_carries_what_serving_needs(built, settings):
    mlflow.set_tracking_uri(settings.tracking_uri)
    info = mlflow.models.get_model_info("models:/churn@champion")
    meta = info.metadata
    assert meta["feature_service"] == "churn_v1" and meta["features"] == CHURN_FEATURES
    assert set(meta["risk_cutoffs"]) == {"medium", "high", "critical"} and len(meta["data_fingerprint"]) == 16
    assert meta["risk_cutoffs"]["medium"] < meta["risk_cutoffs"]["high"] < meta["risk_cutoffs"]["critical"]
    assert [c.name for c in info.signature.inputs.inputs] == CHURN_FEATURES
    run = MlflowClient(settings.tracking_uri).get_run(info.run_id)
    assert run.data.tags["feature_service"] == "churn_v1" and "test_brier" in run.data.metrics
    artifacts = {a.path for a in MlflowClient(settings.tracking_uri).list_artifacts(info.run_id)}
    assert {"feature_importance.csv", "model_metadata.json"} <= artifacts

    # per-customer SHAP reason codes from the stored model: contributions add up to the margin
    model = mlflow.xgboost.load_model("models:/churn@champion")
    rows = xgb.DMatrix(pd.DataFrame(info.saved_input_example_info and mlflow.models.Model.load(info.model_uri).load_input_example()))
    contributions = model.get_booster().predict(rows, pred_contribs=True)
    margin = model.get_booster().predict(rows, output_margin=True)
    np.testing.assert_allclose(contributions.sum(axis=1), margin, rtol=1e-4, atol=1e-4)


def test_fraud_and_segment_store_their_decisions(built, settings):
    mlflow.set_tracking_uri(settings.tracking_uri)
    fraud = mlflow.models.get_model_info("models:/fraud@champion").metadata
    assert 0 < fraud["threshold"] < 1 and fraud["feature_service"] == "fraud_v1"
    segment = mlflow.models.get_model_info("models:/segment@champion").metadata
    k = len(segment["segment_names"])
    model = mlflow.sklearn.load_model("models:/segment@champion")
    assert model[-1].n_clusters == k


def test_online_sqlite_reads_match_the_last_snapshot(built, settings, table):
    fs = store.open_store(settings)
    expected = latest_rows(table, 25)
    got = store.online_features(fs, "churn_v1", expected.index.tolist()).set_index("customer_id")
    np.testing.assert_allclose(got[CHURN_FEATURES].to_numpy(), expected.loc[got.index, CHURN_FEATURES].to_numpy())


def test_online_fraud_features_use_the_same_code_as_training(built, settings, table):
    fs = store.open_store(settings)
    profile = latest_rows(table, 5)
    request = {"amount": [12.0, 900.0, 50.0, 3000.0, 7.5], "merchant_category": ["groceries", "electronics", "dining", "travel", "cash"],
               "channel": ["pos", "online", "mobile", "online", "atm"], "country": ["GB", "NG", "FR", "US", "GB"],
               "device_id": ["x", "y", "z", "w", "v"], "transaction_time": [1_790_000_000 + 3600 * i for i in range(5)]}
    got = store.online_features(fs, "fraud_v1", profile.index.tolist(), request)
    inputs = {**request, **{c: profile[c].tolist() for c in profile.columns}}
    expected = transaction_features(inputs)
    for name in OUTPUT_FEATURES:
        np.testing.assert_allclose(got[name].astype(float), np.asarray(expected[name], dtype=float), err_msg=name)


def test_retraining_registers_a_new_version_without_moving_aliases(built, settings):
    client = MlflowClient(settings.tracking_uri)
    names = ("churn", "fraud", "segment")
    # other tests may have registered versions of their own
    following = {name: str(1 + max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))) for name in names}
    second = train_all(settings, progress=False)
    for name in names:
        assert second[name]["registered"]["version"] == following[name] and second[name]["registered"]["aliases"] == []
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    summary = json.loads((settings.data_dir / "training_summary.json").read_text())
    assert summary["churn"]["registered"]["version"] == following["churn"]


def test_feasts_materialize_into_redis_reads_as_the_partitions_online_writes_into_sqlite(built, settings, table, redis_url):
    """The features stage writes each partition's latest rows itself (store.write_latest); Feast's own
    materialization of the same window, into Redis, must leave every customer with the same values."""
    redis_settings = settings.model_copy(update={"online_store": "redis", "redis_url": redis_url})
    store.apply(redis_settings)
    redis_store = store.open_store(redis_settings)
    store.materialize(redis_store, table["event_timestamp"].min(), table["event_timestamp"].max())
    sqlite_store = store.open_store(settings)
    assert store.online_features(redis_store, "churn_v1", latest_rows(table, 40).index.tolist()).notna().all().all()
    customers = sorted(table["customer_id"].unique())
    stream = [f"customer_stream:{name}" for name in STREAM_FEATURES]

    def read(feature_store, service):
        if isinstance(service, str):
            frame = store.online_features(feature_store, service, customers)
        else:
            frame = pd.DataFrame(feature_store.get_online_features(features=service, entity_rows=[{"customer_id": c} for c in customers]).to_dict())
        return frame.set_index("customer_id").sort_index()[sorted(frame.columns.drop("customer_id"))]

    for service in ("churn_v1", "segment_v1", stream):
        from_redis, from_sqlite = read(redis_store, service), read(sqlite_store, service)
        assert len(from_redis) == len(customers) and from_redis.notna().any(axis=1).mean() > 0.9
        pd.testing.assert_frame_equal(from_redis, from_sqlite)


# Last: it changes one customer's online values, which the comparisons above read.
def test_push_writes_fresh_aggregates_online(built, settings, table):
    from feast.data_source import PushMode

    fs = store.open_store(settings)
    row = latest_rows(table, 1, pushed=True).reset_index()
    customer = row["customer_id"].iloc[0]
    fresh = row[["customer_id", *[f.name for f in fs.get_feature_view("customer_activity").features]]].copy()
    fresh["txn_count_7d"] = 999.0
    fresh["event_timestamp"] = datetime.now(UTC)
    fs.push("customer_activity_push", fresh, to=PushMode.ONLINE)
    got = fs.get_online_features(features=["customer_activity:txn_count_7d"], entity_rows=[{"customer_id": customer}]).to_dict()
    assert got["txn_count_7d"] == [999.0]


def test_a_fraud_candidate_on_fraud_v2_is_a_new_version_with_no_alias_measured_on_the_champions_test_rows(
        built, settings, tmp_path):
    """On a copy of the data folder (the registry's versions and aliases are the copy's alone)."""
    shutil.copytree(settings.data_dir, tmp_path / "data", ignore=shutil.ignore_patterns("inference_log", "reports", "logs"))
    own = settings.model_copy(update={"data_dir": tmp_path / "data"})
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        result = train_candidate(own, "fraud", "fraud_v2")
    finally:  # registering pointed mlflow, and MLFLOW_TRACKING_URI (mlflow sets it), at the copy
        mlflow.set_tracking_uri(settings.tracking_uri)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before
    client = mlflow_client(own.tracking_uri)
    version = client.get_model_version("fraud", result["candidate"]["version"])
    assert result["candidate"]["aliases"] == [] and version.aliases == []
    assert str(client.get_model_version_by_alias("fraud", "champion").version) == result["champion"]["version"] == "1"
    run = client.get_run(version.run_id)
    assert run.data.tags["feature_service"] == "fraud_v2"
    assert "served_reference.parquet" in {a.path for a in client.list_artifacts(version.run_id)}
    model = from_registry("fraud", version.version, own.tracking_uri, tmp_path / "cache").metadata
    assert model["features"] == FRAUD_V2_FEATURES and model["feature_service"] == "fraud_v2"
    # the same transactions as the champion's training: its figure here is its own test figure
    _, first = built
    assert result["champion"]["test_pr_auc"] == pytest.approx(first["fraud"]["metrics"]["test_pr_auc"], abs=1e-9)
    assert result["test"]["rows"] == first["fraud"]["metrics"]["test_rows"]
    assert json.loads((own.data_dir / "candidate_fraud_v2.json").read_text()) == result

    refused = subprocess.run([sys.executable, "-m", "training", "candidate", "fraud_v9", "--data-dir", str(own.data_dir)],
                             cwd=ROOT, capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "unknown feature service 'fraud_v9'" in refused.stderr
