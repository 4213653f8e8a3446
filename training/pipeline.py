"""The pipeline's stages, each callable on its own: data -> features (+ Feast) -> train.

Each stage reads what the previous one wrote under settings.data_dir:

    raw/transactions.parquet, raw/customers.parquet         (data, or your own file)
    rejects/transactions_rejects.csv                         (features: rows that broke the contract)
    clean/transactions_by_customer/part-NNNNN.parquet/       (features: accepted rows, by customer hash;
                            batch-NNNNN.parquet             a file per batch of the raw file)
    features/*_by_partition/part-NNNNN.parquet               (features: each partition's tables)
    features/customer_features.parquet, churn_labels.parquet,
             stream_features.parquet                         (features: the partitions' tables, concatenated)
    feast/registry.db, feast/online_store.db                 (features: feast apply + materialize)
    mlflow.db, mlruns/                                       (train, unless MLFLOW_TRACKING_URI is set)

The features stage holds one batch of the file, or one partition, at a time (training/partitions.py),
so its memory does not grow with the number of customers.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from core import contract, stream_features
from core.families import FAMILIES
from core.feature_sets import FEATURE_SERVICES, GROWS_WITH_TIME, SERVICE_FEATURES
from core.movement import usual_movement
from core.settings import Settings
from training import features, generate, models, partitions, registry, sampling, store
from training.outcomes import Costs

log = logging.getLogger(__name__)
SERVED_REFERENCE_ROWS = 20_000


def make_data(settings: Settings, drift_months: int = 0, progress: bool = True, later_days: int = 30) -> generate.GenerationSummary:
    summary = generate.generate(settings.raw_dir, settings.n_customers, settings.months, settings.start_date,
                                settings.seed, drift_months=drift_months, progress=progress, later_days=later_days)
    log.info("wrote %s customers, %s transactions (%.2f%% fraud) from %s to %s under %s", f"{summary.customers:,}",
             f"{summary.transactions:,}", 100 * summary.fraud_rate, summary.start, summary.end, settings.raw_dir)
    return summary


def offline_tables(tx: pd.DataFrame, snapshots: list[pd.Timestamp], data_end: pd.Timestamp, horizon_days: int,
                   online: Settings | None = None) -> dict[str, pd.DataFrame]:
    """One partition's tables: features as of each snapshot, churn labels (horizons ending by
    `data_end`, the whole data's last transaction) and the stream features as of each transaction.
    With `online` (the settings of an applied store), its customers' latest rows are also written to
    the online store, as materializing from the first to the last snapshot would write them."""
    table = features.compute_features(tx, snapshots)
    tables = {"features": table, "labels": features.churn_labels(tx, table, horizon_days, data_end),
              "stream": stream_features.offline_table(tx)}
    if online is not None:
        feature_store = store.open_store(online, online_only=True)
        store.write_latest(feature_store, {TABLES[name]: tables[name] for name in ("features", "stream")},
                           snapshots[0], snapshots[-1])
    return tables


TABLES = {"features": "customer_features", "labels": "churn_labels", "stream": "stream_features"}
STAGES = ("duplicate_ids_s", "validate_s", "feast_apply_s", "features_and_online_s", "concatenate_s")  # build_features' timings


def build_features(settings: Settings, transactions: Path | None = None, customers: Path | None = None,
                   progress: bool = True) -> dict:
    """Validate the transactions into partitions, apply Feast, compute each partition's features,
    labels and stream features and write its customers' latest rows to the online store, then
    concatenate the partitions' tables for training."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    transactions = transactions or settings.transactions_path
    customers = customers or (settings.customers_path if settings.customers_path.exists() else None)
    known = set(contract.read_table(customers)["customer_id"].astype(str)) if customers else None
    rejects_path = settings.data_dir / "rejects" / "transactions_rejects.csv"
    duplicates = contract.duplicate_rows(transactions, progress=progress)  # the one rule that spans the file, first
    timings["duplicate_ids_s"] = time.perf_counter() - started
    started = time.perf_counter()
    checked, parts = partitions.check_into_partitions(transactions, settings.transactions_by_customer_dir, settings.partitions,
                                                      rejects_path, known, settings.engine, progress, duplicates=duplicates)
    log.info("%s: %s", transactions, checked.summary().replace("\n", "; "))
    if not checked.accepted_rows:
        raise contract.ContractError(f"{transactions}: no row follows the contract; see {rejects_path}")
    timings["validate_s"] = time.perf_counter() - started

    started = time.perf_counter()
    store.apply(settings)  # first: each partition writes its customers' latest rows to the online store
    timings["feast_apply_s"] = time.perf_counter() - started

    started = time.perf_counter()
    snapshots = features.snapshot_dates_between(checked.first, checked.last, settings.snapshot_every_days,
                                                settings.min_history_days)
    job = functools.partial(offline_tables, snapshots=snapshots, data_end=checked.last,
                            horizon_days=settings.churn_horizon_days, online=settings)
    outs = partitions.by_partition(parts, {name: settings.features_dir / f"{table}_by_partition" for name, table in TABLES.items()},
                                   job, settings.engine, progress, desc="features")
    timings["features_and_online_s"] = time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(len(TABLES)) as pool:  # Parquet reads and writes release the GIL: the tables go side by side
        counts = pool.map(lambda name: partitions.concatenate(outs[name], settings.features_dir / f"{TABLES[name]}.parquet"), TABLES)
        rows = dict(zip(TABLES, counts))
    timings["concatenate_s"] = time.perf_counter() - started

    summary = {
        "transactions_file": str(transactions),
        "accepted_rows": checked.accepted_rows,
        "rejected_rows": checked.rejected_rows,
        "reject_reasons": checked.reason_counts,
        "rejects_file": str(rejects_path),
        "partitions": len(parts),
        "engine": settings.engine,
        "snapshots": [str(s.date()) for s in snapshots],
        "feature_rows": rows["features"],
        "features": len(features.NUMERIC_FEATURES) + len(features.PROFILE_FEATURES),
        "labelled_rows": rows["labels"],
        "stream_rows": rows["stream"],
        "online_store": settings.online_store,
        **{k: round(v, 2) for k, v in timings.items()},
    }
    (settings.features_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _active(frame: pd.DataFrame) -> pd.DataFrame:
    """Customers who transacted in the 90 days before the snapshot: the ones who can still churn."""
    return frame[frame["txn_count_90d"] > 0].reset_index(drop=True)


def _snapshot_times(settings: Settings) -> pd.Series:
    return pd.read_parquet(settings.features_dir / "customer_features.parquet", columns=["event_timestamp"])["event_timestamp"]


def _latest_snapshot(settings: Settings, columns: list[str] | None = None) -> pd.DataFrame:
    """Every customer's row of the latest snapshot (only those rows are read), ordered by customer."""
    latest = _snapshot_times(settings).max()
    table = pd.read_parquet(settings.features_dir / "customer_features.parquet", columns=columns,
                            filters=[("event_timestamp", "==", latest)])
    return table.sort_values("customer_id", kind="stable").reset_index(drop=True)


def churn_training_set(feature_store, settings: Settings, *feature_services: str) -> pd.DataFrame:
    """The labelled snapshots of settings.training_customers customers (all when there are fewer),
    stratified on whether the customer ever churned, with the features of `feature_services`
    (default churn's); the sample is in the frame's attrs["sample"]."""
    labels = pd.read_parquet(settings.features_dir / "churn_labels.parquet")
    ever = labels.groupby("customer_id", sort=True)["churned"].max()
    chosen = ever.index[sampling.stratified(ever.index, ever.to_numpy(), settings.training_customers, settings.seed)]
    labels = labels[labels["customer_id"].isin(chosen)].sort_values(["event_timestamp", "customer_id"])
    frame = _active(store.historical_features(feature_store, labels, *(feature_services or [FEATURE_SERVICES["churn"]])))
    frame.attrs["sample"] = {"sample_customers": len(chosen), "population_customers": len(ever), "sample_seed": settings.seed}
    return frame


def fraud_training_set(feature_store, settings: Settings, *feature_services: str) -> pd.DataFrame:
    """settings.fraud_sample transactions from the first snapshot on (the same ones whatever the
    services, the partitions or the engine), stratified on fraud, with the features of
    `feature_services` (default: fraud's current one); the sample is in attrs["sample"]."""
    parts = sorted(settings.transactions_by_customer_dir.glob("part-*.parquet"))
    tx, population = sampling.sample_partitions(parts, "transaction_id", "is_fraud", settings.fraud_sample, settings.seed,
                                                since=_snapshot_times(settings).min())
    tx = tx.sort_values(["customer_id", "timestamp"], kind="stable")
    frame = transactions_with_features(feature_store, tx, *feature_services)
    frame.attrs["sample"] = {"sample_transactions": len(tx), "population_transactions": sum(population.values()),
                             "sample_seed": settings.seed}
    return frame


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
    if FAMILIES[family].rows == "transaction":
        folder = settings.transactions_by_customer_dir
        last = max(batch.column(0).to_pandas().max() for batch in ds.dataset(folder).to_batches(columns=["timestamp"]))
        recent = pd.read_parquet(folder, filters=[("timestamp", ">=", last - pd.Timedelta(days=settings.snapshot_every_days))])
        recent = recent.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)
        return transactions_with_features(feature_store, recent.sample(min(rows, len(recent)), random_state=seed),
                                          *([feature_service] if feature_service else []))
    latest = _latest_snapshot(settings)
    return latest.sample(min(rows, len(latest)), random_state=seed).reset_index(drop=True)


def history_by_period(settings: Settings, family: str, training_set: pd.DataFrame) -> pd.DataFrame:
    """What the service saw period after period, with a `period` column, for each feature's usual
    movement: every customer of each snapshot (churn, segment; settings.training_customers of them
    when there are more), or the fraud training set's transactions by the snapshot the service
    would have scored them against."""
    path = settings.features_dir / "customer_features.parquet"
    if FAMILIES[family].rows == "customer":
        ids = pd.read_parquet(path, columns=["customer_id"])["customer_id"]
        chosen = sampling.customers_sample(ids, settings.training_customers, settings.seed)
        table = pd.read_parquet(path, filters=None if chosen is None else [("customer_id", "in", list(chosen))])
        return table.assign(period=table["event_timestamp"])
    snapshots = pd.Series(_snapshot_times(settings).unique()).sort_values().reset_index(drop=True)
    scored_at = snapshots.searchsorted(pd.to_datetime(training_set["event_timestamp"], utc=True), side="right") - 1
    return training_set.assign(period=snapshots.to_numpy()[scored_at])


def segment_training_set(feature_store, settings: Settings, *feature_services: str) -> pd.DataFrame:
    """The latest snapshot of settings.training_customers customers (all when there are fewer), with
    the features of `feature_services` (default segment's)."""
    latest = _latest_snapshot(settings, columns=["customer_id", "event_timestamp"])
    chosen = sampling.stratified(latest["customer_id"], np.zeros(len(latest)), settings.training_customers, settings.seed)
    frame = _active(store.historical_features(feature_store, latest[chosen].reset_index(drop=True),
                                              *(feature_services or [FEATURE_SERVICES["segment"]])))
    frame.attrs["sample"] = {"sample_customers": int(chosen.sum()), "population_customers": len(latest),
                             "sample_seed": settings.seed}
    return frame


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


@dataclass(frozen=True)
class Trainer:
    """How the pipeline trains one family: its training set, with the features of one or more
    FeatureServices (the one trained on first), and the function that fits a model to it on one
    FeatureService's features; for a family with labels, what fitting its booster takes (what a
    retraining search varies it over, and how a candidate is set beside the champion)."""

    training_set: Callable[..., pd.DataFrame]  # (feature store, settings, *feature services)
    fit: Callable[[pd.DataFrame, Settings, dict | None, list[str]], models.TrainedModel]  # (frame, settings, params, features)
    supervised: models.Supervised | None = None


def fraud_costs(settings: Settings) -> Costs:
    return Costs(settings.fraud_cost_missed, settings.fraud_cost_review, settings.fraud_cost_blocked_good)


# The one place training differs by family: core.families holds their facts, this their training.
TRAINERS = {
    "churn": Trainer(churn_training_set, lambda frame, settings, params, features: models.train_churn(
        frame, settings.seed, params, features), models.CHURN),
    "fraud": Trainer(fraud_training_set, lambda frame, settings, params, features: models.train_fraud(
        frame, settings.seed, params, features, fraud_costs(settings)), models.FRAUD),
    "segment": Trainer(segment_training_set, lambda frame, settings, params, features: models.train_segment(
        frame, range(settings.segment_k_min, settings.segment_k_max + 1), settings.seed)),
}


def train_all(settings: Settings, progress: bool = True) -> dict:
    """Train every family from Feast training sets and register them in MLflow. Each is trained on
    the FeatureService its champion reads (fraud_v2 once `rollout choose` or a canary made it so),
    the family's first on a new registry."""
    from tqdm import tqdm

    from core.registry import champion_feature_service, mlflow_client

    feature_store = store.open_store(settings)
    client = mlflow_client(settings.tracking_uri)
    results = {}
    for name, trainer in tqdm(TRAINERS.items(), desc="training", unit="model", disable=not progress):
        started = time.perf_counter()
        feature_service = champion_feature_service(client, name, FAMILIES[name].feature_service)
        frame = trainer.training_set(feature_store, settings, feature_service)
        trained = trainer.fit(frame, settings, None, SERVICE_FEATURES[feature_service])
        trained.params.update(frame.attrs.get("sample", {}))  # logged with the version: what it was trained on
        registered = register_version(feature_store, settings, trained, frame, feature_service)
        results[name] = {"metrics": trained.metrics, "registered": asdict(registered),
                         "seconds": round(time.perf_counter() - started, 1)}
        log.info("%s v%s: %s", name, registered.version,
                 ", ".join(f"{k}={v:.4g}" for k, v in trained.metrics.items() if k.startswith(("test_", "k", "silhouette"))))
    (settings.data_dir / "training_summary.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def train_candidate(settings: Settings, family: str, feature_service: str) -> dict:
    """A model of a labelled family on another of its FeatureServices (fraud_v2): trained on the same
    sampled rows as train_all's, registered as a new version with no alias, and set beside the
    champion on the same out-of-time test rows. Serving it is the canary's decision (make canary)."""
    from sklearn.metrics import average_precision_score

    from core.registry import CHAMPION, mlflow_client
    from scoring.loading import from_registry

    if feature_service not in SERVICE_FEATURES:
        raise ValueError(f"unknown feature service {feature_service!r}; known: {', '.join(SERVICE_FEATURES)}")
    if feature_service not in FAMILIES[family].feature_services:
        raise ValueError(f"{feature_service} is not one of {family}'s FeatureServices: "
                         f"{', '.join(FAMILIES[family].feature_services)}")
    trainer = TRAINERS[family]
    if trainer.supervised is None:
        raise ValueError(f"{family} has no labels to set a candidate beside its champion on")
    started = time.perf_counter()
    champion_version = str(mlflow_client(settings.tracking_uri).get_model_version_by_alias(family, CHAMPION).version)
    champion = from_registry(family, champion_version, settings.tracking_uri, settings.data_dir / "model_cache")
    feature_store = store.open_store(settings)
    frame = trainer.training_set(feature_store, settings, feature_service, champion.metadata["feature_service"])
    trained = trainer.fit(frame, settings, None, SERVICE_FEATURES[feature_service])
    registered = register_version(feature_store, settings, trained, frame, feature_service)

    _, _, test = trainer.supervised.split(frame)
    label, features = trainer.supervised.label, champion.metadata["features"]
    champion_pr_auc = average_precision_score(test[label], champion.model.inplace_predict(test[features].to_numpy(dtype=float)))
    result = {
        "candidate": {"version": registered.version, "feature_service": feature_service, "aliases": registered.aliases,
                      "test_pr_auc": trained.metrics["test_pr_auc"], "test_roc_auc": trained.metrics["test_roc_auc"]},
        "champion": {"version": champion_version, "feature_service": champion.metadata["feature_service"],
                     "test_pr_auc": float(champion_pr_auc)},
        "test": {"rows": len(test), "positives": int(test[label].sum()),
                 "from": str(test["event_timestamp"].min()), "to": str(test["event_timestamp"].max())},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (settings.data_dir / f"candidate_{feature_service}.json").write_text(json.dumps(result, indent=2))
    log.info("%s v%s (%s): test PR-AUC %.4f; champion v%s (%s) on the same %s rows: %.4f", family, registered.version,
             feature_service, trained.metrics["test_pr_auc"], champion_version, champion.metadata["feature_service"],
             f"{len(test):,}", champion_pr_auc)
    return result
