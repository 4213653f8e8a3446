"""Benchmark of the offline pipeline on the default data set (10,000 customers, 12 months).

Times every stage in one run on one machine and, side by side, the vectorised feature code
against a plain pandas groupby of 11 of the same features (the yardstick: what the obvious
implementation costs per feature here, now), and the features by partition of customers on both
engines (training/partitions.py). Then fraud on fraud_v2 as a candidate beside the champion, and
fraud's training set on Feast's two offline stores (loadtests/bench_offline_store.py).
Writes loadtests/results/offline_pipeline.json and .md.

    python -m loadtests.bench_features [--customers 10000]
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core import contract
from core.settings import get_settings
from loadtests import bench_offline_store
from training import features, partitions, store
from training.pipeline import STAGES, build_features, make_data, train_all, train_candidate

RESULTS = Path(__file__).resolve().parent / "results"
FEATURE_TARGET_S = 60.0


def pandas_groupby_features(tx: pd.DataFrame, snapshots: list[pd.Timestamp]) -> pd.DataFrame:
    """The obvious implementation of 11 of the features, for comparison only."""
    frames = []
    for s in snapshots:
        before = tx[tx["timestamp"] < s]
        age = (s - before["timestamp"]).dt.total_seconds() / 86_400
        per = {}
        for w in features.WINDOWS:
            g = before[age <= w].groupby("customer_id")["amount"]
            per[f"txn_count_{w}d"], per[f"spend_{w}d"] = g.count(), g.sum()
        g90 = before[age <= 90].groupby("customer_id")["amount"]
        per["median_amount_90d"], per["max_amount_90d"] = g90.median(), g90.max()
        per["days_since_last_txn"] = (s - before.groupby("customer_id")["timestamp"].max()).dt.total_seconds() / 86_400
        frames.append(pd.DataFrame(per).assign(event_timestamp=s))
    return pd.concat(frames)


def timed(results: dict, name: str, fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    results[name] = round(time.perf_counter() - started, 2)
    print(f"{name}: {results[name]:.2f} s", flush=True)
    return value


def main(customers: Annotated[int, typer.Option(help="Customers to generate.")] = 10_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = get_settings(data_dir=Path(tmp), n_customers=customers)
        stages: dict[str, float] = {}
        summary = timed(stages, "generate_s", make_data, settings, progress=False)
        checked = timed(stages, "validate_s", contract.load_transactions, settings.transactions_path)
        tx = checked.accepted
        snapshots = features.snapshot_dates(tx, settings.snapshot_every_days, settings.min_history_days)
        table = timed(stages, "features_vectorised_s", features.compute_features, tx, snapshots)
        timed(stages, "features_pandas_groupby_11_of_them_s", pandas_groupby_features, tx, snapshots)
        parts = timed(stages, "partition_transactions_s", partitions.write, tx, Path(tmp) / "by_customer", settings.partitions)
        same_table = {}
        for engine in partitions.ENGINES:  # ray: a local Ray with this machine's cores, its start included
            paths = timed(stages, f"features_by_partition_{engine}_s", partitions.features_by_partition, parts, snapshots,
                          Path(tmp) / f"features_{engine}", engine, progress=False)
            same_table[engine] = partitions.read_features(paths).equals(table)
        timed(stages, "labels_s", features.churn_labels, tx, table, settings.churn_horizon_days)
        feature_summary = build_features(settings, progress=False)
        for stage in STAGES:  # the features stage as `make features` runs it: check, apply, partitions (+ online), concatenate
            stages[f"features_stage_{stage}"] = feature_summary[stage]
        trained = timed(stages, "train_all_s", train_all, settings, progress=False)
        for name, result in trained.items():
            stages[f"train_{name}_s"] = result["seconds"]
        candidate = timed(stages, "train_candidate_fraud_v2_s", train_candidate, settings, "fraud", "fraud_v2")
        offline_stores = bench_offline_store.compare(settings.data_dir)
        fs = store.open_store(settings)
        ids = table.loc[table["event_timestamp"] == table["event_timestamp"].max(), "customer_id"].head(256).tolist()
        store.online_features(fs, "churn_v1", ids[:1])
        timed(stages, "online_read_churn_v1_256_customers_s", store.online_features, fs, "churn_v1", ids)

    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "data": {"customers": summary.customers, "transactions": summary.transactions, "fraud_rate": round(summary.fraud_rate, 4),
                 "snapshots": len(snapshots), "feature_rows": len(table)},
        "stages_s": stages,
        "transactions_to_features_s": round(stages["validate_s"] + stages["features_vectorised_s"] + stages["labels_s"], 2),
        "target_transactions_to_features_s": FEATURE_TARGET_S,
        "seconds_per_feature": {
            "vectorised": round(stages["features_vectorised_s"] / len(features.NUMERIC_FEATURES + features.PROFILE_FEATURES), 3),
            "pandas_groupby": round(stages["features_pandas_groupby_11_of_them_s"] / 11, 3),
        },
        "partitions": settings.partitions,
        "partitioned_table_equals_one_piece": same_table,
        "models": {name: {k: round(v, 4) for k, v in r["metrics"].items()} for name, r in trained.items()},
        "fraud_v2_candidate": candidate,
        "fraud_training_set_by_offline_store": offline_stores,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "offline_pipeline.json").write_text(json.dumps(result, indent=2))
    lines = ["# Offline pipeline benchmark", "",
             f"{summary.customers:,} customers, {summary.transactions:,} transactions, {len(snapshots)} snapshots, "
             f"{result['machine']['cpus']} CPUs.", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k.removesuffix('_s')} | {v:.2f} |" for k, v in stages.items()]
    lines += ["", f"Transactions to features (validate + features + labels): {result['transactions_to_features_s']} s "
              f"(target < {FEATURE_TARGET_S:.0f} s).",
              f"Seconds per feature over all snapshots: vectorised {result['seconds_per_feature']['vectorised']}, "
              f"plain pandas groupby {result['seconds_per_feature']['pandas_groupby']} (11 of the features, same run).",
              (f"By {settings.partitions} partitions of customers (partition, then features): the table equals the "
               f"one-piece table on every engine: {same_table}.")]
    lines += ["", (f"Fraud on fraud_v2 (v1's features and the stream's), registered with no alias: out-of-time PR-AUC "
                   f"{candidate['candidate']['test_pr_auc']:.4f} against the champion's (fraud_v1) "
                   f"{candidate['champion']['test_pr_auc']:.4f} on the same {candidate['test']['rows']:,} transactions "
                   f"({candidate['test']['frauds']:,} frauds)."),
              "", (f"Fraud's training set ({settings.fraud_sample:,} sampled transactions) by offline store, each run a "
                   f"process of its own under a {offline_stores['memory_limit_gb']:.0f} GB address-space limit:"), "",
              "| offline store: services | rows | seconds | peak RSS GB |", "|---|---:|---:|---:|"]
    for name, run in offline_stores["runs"].items():
        lines.append(f"| {name} | {run['rows']:,} | {run['seconds']} | {run['peak_rss_gb']} |" if "failed" not in run
                     else f"| {name} | failed: {run['failed']} | | |")
    if agreement := offline_stores["fraud_v1_file_vs_duckdb"]:
        lines += ["", (f"fraud_v1, file against DuckDB: {agreement['matched']:,} rows matched, {agreement['differing']} "
                       f"differing ({agreement['rows_a']:,} and {agreement['rows_b']:,} rows).")]
    (RESULTS / "offline_pipeline.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
