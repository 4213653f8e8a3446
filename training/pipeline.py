"""The pipeline's stages, each callable on its own: data -> features (+ Feast) -> train.

Each stage reads what the previous one wrote under settings.data_dir:

    raw/transactions.parquet, raw/customers.parquet         (data, or your own file)
    rejects/transactions_rejects.csv                         (features: rows that broke the contract)
    clean/transactions.parquet                               (features: accepted rows)
    features/customer_features.parquet, churn_labels.parquet (features)
    feast/registry.db, feast/online_store.db                 (features: feast apply + materialize)
    mlflow.db, mlruns/                                       (train, unless MLFLOW_TRACKING_URI is set)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from core.feature_sets import FEATURE_SERVICES, GROWS_WITH_TIME, SERVICE_FEATURES
from core import stream_features
from core.movement import usual_movement
from core.settings import Settings
from training import contract, features, generate, models, partitions, registry, store

log = logging.getLogger(__name__)
SERVED_REFERENCE_ROWS = 20_000


def make_data(settings: Settings, drift_months: int = 0, progress: bool = True, later_days: int = 30) -> generate.GenerationSummary:
    summary = generate.generate(settings.raw_dir, settings.n_customers, settings.months, settings.start_date,
                                settings.seed, drift_months=drift_months, progress=progress, later_days=later_days)
    log.info("wrote %s customers, %s transactions (%.2f%% fraud) from %s to %s under %s", f"{summary.customers:,}",
             f"{summary.transactions:,}", 100 * summary.fraud_rate, summary.start, summary.end, settings.raw_dir)
    return summary


def build_features(settings: Settings, transactions: Path | None = None, customers: Path | None = None,
                   progress: bool = True) -> dict:
    """Validate the transactions, compute features and labels, apply and materialize Feast."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    transactions = transactions or settings.transactions_path
    customers = customers or (settings.customers_path if settings.customers_path.exists() else None)
    known = set(contract.read_table(customers)["customer_id"].astype(str)) if customers else None
    checked = contract.load_transactions(transactions, known_customers=known)
    rejects_path = settings.data_dir / "rejects" / "transactions_rejects.csv"
    contract.write_rejects(checked, rejects_path)
    log.info("%s: %s", transactions, checked.summary().replace("\n", "; "))
    if checked.accepted.empty:
        raise contract.ContractError(f"{transactions}: no row follows the contract; see {rejects_path}")
    clean_path = settings.data_dir / "clean" / "transactions.parquet"
    clean_path.parent.mkdir(parents=True, exist_ok=True)
    checked.accepted.to_parquet(clean_path, index=False)
    timings["validate_s"] = time.perf_counter() - started

    started = time.perf_counter()
    tx = checked.accepted
    snapshots = features.snapshot_dates(tx, settings.snapshot_every_days, settings.min_history_days)
    parts = partitions.write(tx, settings.data_dir / "clean" / "transactions_by_customer", settings.partitions)
    table = partitions.read_features(partitions.features_by_partition(
        parts, snapshots, settings.features_dir / "customer_features_by_partition", settings.engine, progress))
    labels = features.churn_labels(tx, table, settings.churn_horizon_days)
    settings.features_dir.mkdir(parents=True, exist_ok=True)
    table.to_parquet(settings.features_dir / "customer_features.parquet", index=False)
    labels.to_parquet(settings.features_dir / "churn_labels.parquet", index=False)
    timings["features_s"] = time.perf_counter() - started

    started = time.perf_counter()
    stream_table = stream_features.offline_table(tx)
    stream_table.to_parquet(settings.features_dir / "stream_features.parquet", index=False)
    timings["stream_features_s"] = time.perf_counter() - started

    started = time.perf_counter()
    store.apply(settings)
    feature_store = store.open_store(settings)
    store.materialize(feature_store, table)
    timings["feast_apply_materialize_s"] = time.perf_counter() - started

    summary = {
        "transactions_file": str(transactions),
        "accepted_rows": len(checked.accepted),
        "rejected_rows": len(checked.rejected),
        "reject_reasons": checked.reason_counts,
        "rejects_file": str(rejects_path),
        "snapshots": [str(s.date()) for s in snapshots],
        "feature_rows": len(table),
        "features": len(features.NUMERIC_FEATURES) + len(features.PROFILE_FEATURES),
        "labelled_rows": len(labels),
        "online_store": settings.online_store,
        **{k: round(v, 2) for k, v in timings.items()},
    }
    (settings.features_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _active(frame: pd.DataFrame) -> pd.DataFrame:
    """Customers who transacted in the 90 days before the snapshot: the ones who can still churn."""
    return frame[frame["txn_count_90d"] > 0].reset_index(drop=True)


def churn_training_set(feature_store, settings: Settings) -> pd.DataFrame:
    labels = pd.read_parquet(settings.features_dir / "churn_labels.parquet")
    frame = store.historical_features(feature_store, labels, FEATURE_SERVICES["churn"])
    return _active(frame)


def fraud_training_set(feature_store, settings: Settings, *feature_services: str) -> pd.DataFrame:
    """A sample of labelled transactions (settings.fraud_sample, the same ones whatever the services)
    with the features of `feature_services` (default: fraud's current one)."""
    tx = pd.read_parquet(settings.data_dir / "clean" / "transactions.parquet")
    first_snapshot = pd.read_parquet(settings.features_dir / "customer_features.parquet", columns=["event_timestamp"]).min().iloc[0]
    tx = tx[tx["timestamp"] >= first_snapshot]
    return transactions_with_features(feature_store, tx.sample(min(settings.fraud_sample, len(tx)), random_state=settings.seed),
                                      *feature_services)


# A transaction is scored before it is stored anywhere: its features are read as of just before it
# (the stream's row of the transaction itself, stamped with its time, is not there yet).
JUST_BEFORE = pd.Timedelta(microseconds=1)


def transactions_with_features(feature_store, tx: pd.DataFrame, *feature_services: str) -> pd.DataFrame:
    """Each transaction with the features of `feature_services` (default: fraud's current one) as
    the service had them when it came: the customer's latest snapshot and stream row before it,
    and the features computed from the transaction itself. `event_timestamp` is the transaction's
    time less JUST_BEFORE."""
    entity_df = pd.DataFrame({
        "customer_id": tx["customer_id"].to_numpy(), "event_timestamp": (tx["timestamp"] - JUST_BEFORE).to_numpy(),
        "amount": tx["amount"].to_numpy(), "merchant_category": tx["merchant_category"].to_numpy(),
        "channel": tx["channel"].to_numpy(), "country": tx["country"].to_numpy(), "device_id": tx["device_id"].to_numpy(),
        "transaction_time": (tx["timestamp"].astype("int64") // 10**9).to_numpy(), "is_fraud": tx["is_fraud"].to_numpy(),
    })
    return store.historical_features(feature_store, entity_df, *(feature_services or [FEATURE_SERVICES["fraud"]]))


def served_population(feature_store, settings: Settings, family: str, rows: int = SERVED_REFERENCE_ROWS,
                      seed: int | None = None, feature_service: str | None = None) -> pd.DataFrame:
    """What the service will see, for the served reference stored with each version: every customer
    of the latest snapshot as the online store holds them (churn, segment; all of them, not only
    the active ones training learns from), or the transactions of the last snapshot period with
    `feature_service`'s features (fraud; default its current service), each up to `rows`."""
    seed = settings.seed if seed is None else seed
    if family == "fraud":
        tx = pd.read_parquet(settings.data_dir / "clean" / "transactions.parquet")
        recent = tx[tx["timestamp"] >= tx["timestamp"].max() - pd.Timedelta(days=settings.snapshot_every_days)]
        return transactions_with_features(feature_store, recent.sample(min(rows, len(recent)), random_state=seed),
                                          *([feature_service] if feature_service else []))
    table = pd.read_parquet(settings.features_dir / "customer_features.parquet")
    latest = table[table["event_timestamp"] == table["event_timestamp"].max()]
    return latest.sample(min(rows, len(latest)), random_state=seed).reset_index(drop=True)


def history_by_period(settings: Settings, family: str, training_set: pd.DataFrame) -> pd.DataFrame:
    """What the service saw period after period, with a `period` column, for each feature's usual
    movement: every customer of each snapshot (churn, segment), or the fraud training set's
    transactions by the snapshot the service would have scored them against."""
    path = settings.features_dir / "customer_features.parquet"
    if family != "fraud":
        table = pd.read_parquet(path)
        return table.assign(period=table["event_timestamp"])
    stamps = pd.read_parquet(path, columns=["event_timestamp"])["event_timestamp"]  # the snapshot dates only
    snapshots = pd.Series(stamps.unique()).sort_values().reset_index(drop=True)
    scored_at = snapshots.searchsorted(pd.to_datetime(training_set["event_timestamp"], utc=True), side="right") - 1
    return training_set.assign(period=snapshots.to_numpy()[scored_at])


def segment_training_set(feature_store, settings: Settings) -> pd.DataFrame:
    table = pd.read_parquet(settings.features_dir / "customer_features.parquet", columns=["customer_id", "event_timestamp"])
    latest = table[table["event_timestamp"] == table["event_timestamp"].max()]
    frame = store.historical_features(feature_store, latest.reset_index(drop=True), FEATURE_SERVICES["segment"])
    return _active(frame)


def register_version(feature_store, settings: Settings, trained: models.TrainedModel, frame: pd.DataFrame,
                     feature_service: str) -> registry.Registered:
    """Register a trained model as a new version with what every version carries: the served
    reference drift reports compare with, and each feature's usual movement between periods."""
    registered = registry.log_and_register(trained, frame, feature_service, settings.tracking_uri, settings.artifact_root)
    registry.log_served_reference(registered, served_population(feature_store, settings, trained.name,
                                                                feature_service=feature_service), settings.tracking_uri)
    compared = [f for f in trained.features if f not in GROWS_WITH_TIME]
    movement = usual_movement(history_by_period(settings, trained.name, frame), compared, "period")
    registry.log_drift_thresholds(registered, movement, settings.tracking_uri)
    return registered


def train_all(settings: Settings, progress: bool = True) -> dict:
    """Train churn, fraud and segment from Feast training sets and register them in MLflow."""
    from tqdm import tqdm

    feature_store = store.open_store(settings)
    steps = {
        "churn": (churn_training_set, lambda f: models.train_churn(f, settings.seed)),
        "fraud": (fraud_training_set, lambda f: models.train_fraud(f, settings.seed)),
        "segment": (segment_training_set, lambda f: models.train_segment(
            f, range(settings.segment_k_min, settings.segment_k_max + 1), settings.seed)),
    }
    results = {}
    for name, (build, train) in tqdm(steps.items(), desc="training", unit="model", disable=not progress):
        started = time.perf_counter()
        frame = build(feature_store, settings)
        trained = train(frame)
        registered = register_version(feature_store, settings, trained, frame, FEATURE_SERVICES[name])
        results[name] = {"metrics": trained.metrics, "registered": asdict(registered),
                         "seconds": round(time.perf_counter() - started, 1)}
        log.info("%s v%s: %s", name, registered.version,
                 ", ".join(f"{k}={v:.4g}" for k, v in trained.metrics.items() if k.startswith(("test_", "k", "silhouette"))))
    (settings.data_dir / "training_summary.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def train_fraud_candidate(settings: Settings, feature_service: str) -> dict:
    """A fraud model on another FeatureService (fraud_v2): trained on the same sampled transactions
    as train_all's, registered as a new version with no alias, and set beside the champion on the
    same out-of-time test transactions. Serving it is the canary's decision (make canary)."""
    from sklearn.metrics import average_precision_score

    from bentos.loading import from_registry
    from core.registry import CHAMPION, mlflow_client

    if feature_service not in SERVICE_FEATURES:
        raise ValueError(f"unknown feature service {feature_service!r}; known: {', '.join(SERVICE_FEATURES)}")
    started = time.perf_counter()
    champion_version = str(mlflow_client(settings.tracking_uri).get_model_version_by_alias("fraud", CHAMPION).version)
    champion = from_registry("fraud", champion_version, settings.tracking_uri, settings.data_dir / "model_cache")
    feature_store = store.open_store(settings)
    frame = fraud_training_set(feature_store, settings, feature_service, champion.metadata["feature_service"])
    trained = models.train_fraud(frame, settings.seed, features=SERVICE_FEATURES[feature_service])
    registered = register_version(feature_store, settings, trained, frame, feature_service)

    _, _, test = models.fraud_split(frame)
    features = champion.metadata["features"]
    champion_pr_auc = average_precision_score(test["is_fraud"], champion.model.inplace_predict(test[features].to_numpy(dtype=float)))
    result = {
        "candidate": {"version": registered.version, "feature_service": feature_service, "aliases": registered.aliases,
                      "test_pr_auc": trained.metrics["test_pr_auc"], "test_roc_auc": trained.metrics["test_roc_auc"]},
        "champion": {"version": champion_version, "feature_service": champion.metadata["feature_service"],
                     "test_pr_auc": float(champion_pr_auc)},
        "test": {"rows": len(test), "frauds": int(test["is_fraud"].sum()),
                 "from": str(test["event_timestamp"].min()), "to": str(test["event_timestamp"].max())},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (settings.data_dir / f"candidate_{feature_service}.json").write_text(json.dumps(result, indent=2))
    log.info("fraud v%s (%s): test PR-AUC %.4f; champion v%s (%s) on the same %s transactions: %.4f", registered.version,
             feature_service, trained.metrics["test_pr_auc"], champion_version, champion.metadata["feature_service"],
             f"{len(test):,}", champion_pr_auc)
    return result
