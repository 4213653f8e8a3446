"""Feast's Ray components against what the pipeline uses, on a data folder where the features stage ran:

  materialize  every feature view's rows from the first to the last snapshot into a Redis online store
               (what the features stage does), with Feast's local engine or its Ray compute engine
               (`batch_engine: ray.engine`), reading the Parquet through DuckDB or through Feast's Ray
               offline store;
  historical   churn's training set: get_historical_features of the churn FeatureService onto the
               labels file's rows, on the DuckDB offline store or Feast's Ray offline store
               (`offline_store: ray`).

Each variant runs in a process of its own. Its seconds are the Feast call's alone, with Ray's start-up
(done by Feast's own initializer, before the call) apart; its memory is the peak of the summed memory
of its whole process tree (Ray starts a raylet, a GCS and worker processes), sampled every half
second: resident (RSS, an upper bound: pages shared between processes, Ray's object store among them,
count in every process that maps them) and proportional (PSS, shared pages split between them). Every
materialization starts from an empty Redis; the online values of a sample of customers are then read
through the churn FeatureService and compared with the local engine's, and each training set with
DuckDB's, matched on (customer_id, event_timestamp). A variant that fails or times out is a result
with its error, not the end of the run; so is one that finishes with other values.

    python -m loadtests.bench_feast_ray compare --data-dir DATA_DIR        # loadtests/results/feast_ray.json
    python -m loadtests.bench_feast_ray compare --data-dir DATA_DIR --only historical:ray --out /tmp/ray.json

Feast's Ray joins took minutes for 16,000 training rows here: on a bank's data expect them to meet
--timeout-s (an hour each by default); --only runs the variants named.

The registry's sources are the absolute paths `feast apply` saw: run it on a copy only after applying
there (training.store.apply). Materializing records its interval in the folder's registry, as the
pipeline's materialization does; nothing else is written into the folder.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import psutil
import typer

from loadtests.memory import TreeMemory
from loadtests.servers import ROOT, redis_server, stop

RESULTS = ROOT / "loadtests" / "results"
KEY = ["customer_id", "event_timestamp"]


@dataclass(frozen=True)
class Variant:
    what: str
    batch_engine: str | None = None  # core/store.py's names: local, ray
    offline_store: str | None = None  # duckdb, ray; the yaml's (duckdb) when None
    store_options: dict = field(default_factory=dict)  # set on the RayOfflineStoreConfig
    writers_per_cpu: bool = False  # the Ray engine's write_concurrency: one writer per CPU instead of 1
    clock_at_window_end: bool = False  # the Ray engine's TTL filter measured from the window's end, not now
    by_partition: bool = False  # not Feast's materialize: the features stage's own per-partition writes


MATERIALIZE = {
    "local": Variant("Feast's local engine; DuckDB reads the Parquet (what the pipeline runs)", batch_engine="local"),
    "ray": Variant("Feast's Ray engine; DuckDB reads the Parquet in the driver, Ray filters, dedups and writes",
                   batch_engine="ray"),
    "ray+ray-store": Variant("Feast's Ray engine reading through the Ray offline store (ray.data.read_parquet)",
                             batch_engine="ray", offline_store="ray"),
    "ray+ray-store+fixed": Variant(
        "as ray+ray-store, with its TTL filter measured from the window's end instead of the wall clock "
        "and one online-store writer per CPU instead of 1: what the engine would cost doing the local engine's work",
        batch_engine="ray", offline_store="ray", writers_per_cpu=True, clock_at_window_end=True),
}
MATERIALIZE["partitions"] = Variant(
    "what the features stage does instead: a Ray task per partition writes its customers' latest rows "
    "(store.write_latest) from the partition's feature and stream tables", by_partition=True)
HISTORICAL = {
    "duckdb": Variant("DuckDB: the point-in-time join in SQL (what the pipeline runs)", offline_store="duckdb"),
    "ray": Variant("Feast's Ray offline store; features under broadcast_join_threshold_mb (100) are broadcast "
                   "and joined onto each batch of entity rows with merge_asof", offline_store="ray"),
    "ray-distributed-join": Variant(
        "Feast's Ray offline store on its distributed (windowed) join, which it takes for more than 100 MB of "
        "features (a bank's customers), forced here with broadcast_join_threshold_mb -1 (0 reads as unset: "
        "RayResourceManager.should_use_broadcast_join takes `0 or 100`)",
        offline_store="ray", store_options={"broadcast_join_threshold_mb": -1}),
}
JOBS = {"materialize": MATERIALIZE, "historical": HISTORICAL}

app = typer.Typer(add_completion=False)


class FeastErrors(logging.Handler):
    """Errors Feast logged in this process: its Ray code logs and swallows some (a failed online
    write, a failed batch) and reports success."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:300])


def _clock_at(moment: datetime) -> None:
    """Make the Ray engine's filter node (feast/infra/compute_engines/ray/nodes.py, RayFilterNode) see
    `moment` as now. Defined here, the clock is pickled by value into the Ray tasks that filter."""
    from feast.infra.compute_engines.ray import nodes

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return moment.astimezone(tz) if tz else moment.replace(tzinfo=None)

    nodes.datetime = Clock


def _feature_store(settings, variant: Variant):
    from feast import FeatureStore

    from core.store import store_config

    config = store_config(settings, offline_store=variant.offline_store, batch_engine=variant.batch_engine)
    for name, value in variant.store_options.items():
        setattr(config.offline_store, name, value)
    if variant.writers_per_cpu:
        config.batch_engine.write_concurrency = os.cpu_count() or 1
    return config, FeatureStore(repo_path=str(settings.feature_repo), config=config)


def _write_partition(settings, features: Path, first: pd.Timestamp, last: pd.Timestamp) -> int:
    from training import store
    from training.pipeline import TABLES

    folder = features.parent.parent  # the data folder's features/
    tables = {TABLES[name]: pd.read_parquet(folder / f"{TABLES[name]}_by_partition" / features.name) for name in ("features", "stream")}
    return store.write_latest(store.open_store(settings, online_only=True), tables, first, last)


def _write_by_partition(settings, first: pd.Timestamp, last: pd.Timestamp) -> None:
    """The features stage's online writes alone, as Ray tasks on a local Ray with this machine's cores."""
    import ray

    task = ray.remote(_write_partition)
    parts = sorted((settings.features_dir / "customer_features_by_partition").glob("part-*.parquet"))
    ray.get([task.remote(settings, part, first, last) for part in parts])


@app.command()
def one(job: str, variant: str, data_dir: Path,
        out: Annotated[Path, typer.Option(help="Where a training set goes (Parquet).")],
        redis_url: Annotated[str, typer.Option(help="The online store, host:port.")] = "",
        first: Annotated[str, typer.Option(help="The window's first snapshot (materialize).")] = "",
        last: Annotated[str, typer.Option(help="The window's last snapshot (materialize).")] = "") -> None:
    """One variant of one job; prints its seconds, Ray's start-up and this process's peak RSS as JSON."""
    from feast.infra.ray_initializer import ensure_ray_initialized

    from core.feature_sets import FEATURE_SERVICES
    from core.settings import get_settings
    from training import store
    from training.partitions import _ray_started

    chosen = JOBS[job][variant]
    errors = FeastErrors()
    logging.getLogger("feast").addHandler(errors)
    settings = get_settings(data_dir=data_dir, online_store="redis", redis_url=redis_url or "localhost:6379")
    config, feature_store = _feature_store(settings, chosen)
    ray_config = config.batch_engine if job == "materialize" and chosen.batch_engine == "ray" \
        else config.offline_store if config.offline_store.type == "ray" else None
    started = time.perf_counter()
    if ray_config is not None:
        ensure_ray_initialized(ray_config)  # what Feast's first Ray call does; later calls find it done
    elif chosen.by_partition:
        _ray_started()
    ray_start_s = time.perf_counter() - started
    result: dict = {}
    if job == "materialize":
        window = pd.Timestamp(first), pd.Timestamp(last)
        if chosen.clock_at_window_end:
            _clock_at((window[1] + pd.Timedelta(seconds=1)).to_pydatetime())
        started = time.perf_counter()
        if chosen.by_partition:
            _write_by_partition(settings, *window)
        else:
            store.materialize(feature_store, *window)
    else:
        labels = pd.read_parquet(settings.features_dir / "churn_labels.parquet").sort_values(KEY)
        started = time.perf_counter()
        frame = store.historical_features(feature_store, labels, FEATURE_SERVICES["churn"])
        result["rows"] = len(frame)
        frame.to_parquet(out, index=False)
    result["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps({**result, "ray_start_s": round(ray_start_s, 2) if ray_config is not None or chosen.by_partition else None,
                      "driver_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                      "feast_errors_logged": len(errors.messages), "first_feast_errors": errors.messages[:3]}))


def _end_tree(process: subprocess.Popen) -> None:
    """The variant's process and every process it started (Ray's), by their ids."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in tree:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def _run(args: list[str], log: Path, timeout_s: float) -> dict:
    """One variant in its own process: its printed result with its tree's peak memory, or how it failed."""
    started = time.perf_counter()
    with log.open("w") as errors, log.with_suffix(".out").open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "loadtests.bench_feast_ray", "one", *args], cwd=ROOT,
                                   stdout=output, stderr=errors)
        with TreeMemory(process.pid) as memory:
            try:
                code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _end_tree(process)
                code = None
    peak = {"peak_rss_gb": round(memory.peak_rss / 2**30, 2), "peak_pss_gb": round(memory.peak_pss / 2**30, 2)}
    if code is None:
        return {"failed": f"still running after {timeout_s:.0f} s", **peak}
    if code == 0:
        printed = [line for line in log.with_suffix(".out").read_text().splitlines() if line.startswith("{")]
        return {**json.loads(printed[-1]), **peak}
    lines = log.read_text().splitlines()
    last = next((line for line in reversed(lines) if re.match(r"\w+(Error|Exception)\b", line)),
                next((line for line in reversed(lines) if any(c.isalnum() for c in line)), "(no output)"))
    return {"failed": f"exit {code} after {time.perf_counter() - started:.0f} s: {last[:300]}", **peak}


def same_values(a: pd.DataFrame, b: pd.DataFrame, key: list[str]) -> dict:
    """Rows of `a` and `b` matched on `key`: how many matched, how many differ anywhere (exactly, a missing
    value equal only to a missing one), and the columns that differ, with how many rows each."""
    matched = a.merge(b, on=key, suffixes=("_a", "_b"))
    differing = np.zeros(len(matched), dtype=bool)
    columns: dict[str, int] = {}
    for column in a.columns.intersection(b.columns).difference(key):
        x, y = matched[f"{column}_a"], matched[f"{column}_b"]
        if x.dtype.kind in "fiub" and y.dtype.kind in "fiub":
            here = ~np.isclose(x.to_numpy(float), y.to_numpy(float), equal_nan=True, rtol=0, atol=0)
        else:
            here = ~((x == y) | (x.isna() & y.isna())).to_numpy()
        if here.any():
            columns[column] = int(here.sum())
        differing |= here
    return {"rows_a": len(a), "rows_b": len(b), "matched": len(matched), "differing": int(differing.sum()),
            "differing_columns": dict(sorted(columns.items(), key=lambda kv: -kv[1])[:10]),
            "columns_only_in_a": sorted(a.columns.difference(b.columns)),
            "columns_only_in_b": sorted(b.columns.difference(a.columns))}


def _without_features(frame: pd.DataFrame, features: list[str]) -> int:
    """Rows with every feature missing."""
    present = [f for f in features if f in frame.columns]
    return int(frame[present].isna().all(axis=1).sum()) if present else len(frame)


@app.command()
def compare(
    data_dir: Annotated[Path, typer.Option(help="A data folder where the features stage ran.")],
    out: Annotated[Path, typer.Option(help="The results (JSON).")] = RESULTS / "feast_ray.json",
    sample: Annotated[int, typer.Option(help="Customers whose online values are compared.")] = 200,
    timeout_s: Annotated[float, typer.Option(help="Time limit of each variant.")] = 3600.0,
    only: Annotated[list[str] | None, typer.Option(help="Run only these variants, as job:name (repeatable).")] = None,
) -> dict:
    """Every variant of MATERIALIZE and HISTORICAL; seconds and peak memory of each, or how it failed,
    and whether each left the same values as the first of its job."""
    import feast
    import ray
    import redis as redis_client

    from core.feature_sets import FEATURE_SERVICES, SERVICE_FEATURES
    from core.settings import get_settings
    from core.store import open_store
    from training.store import online_features

    data_dir = data_dir.resolve()
    features = data_dir / "features"
    stamps = pd.read_parquet(features / "customer_features.parquet", columns=KEY)
    first, last = stamps["event_timestamp"].min(), stamps["event_timestamp"].max()
    customers = np.sort(stamps["customer_id"].unique())
    ids = sorted(np.random.default_rng(0).choice(customers, min(sample, len(customers)), replace=False).tolist())
    churn_service = FEATURE_SERVICES["churn"]
    churn_features = SERVICE_FEATURES[churn_service]
    wanted = [(job, name) for job, variants in JOBS.items() for name in variants
              if not only or f"{job}:{name}" in only]
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "feast": feast.__version__, "ray": ray.__version__},
        "data": {"data_dir": str(data_dir), "customers": len(customers), "feature_rows": len(stamps),
                 "label_rows": pd.read_parquet(features / "churn_labels.parquet", columns=["customer_id"]).shape[0],
                 "window": [str(first), str(last)], "online_sample": len(ids)},
        "variants": {job: {name: variant.what for name, variant in variants.items()} for job, variants in JOBS.items()},
        "materialize": {}, "historical": {}, "same_values": {"materialize": {}, "historical": {}},
    }
    del stamps
    online: dict[str, pd.DataFrame] = {}
    trained: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis, port = redis_server(Path(tmp))
        client = redis_client.Redis(port=port)
        settings = get_settings(data_dir=data_dir, online_store="redis", redis_url=f"127.0.0.1:{port}")
        try:
            for job, name in wanted:
                print(f"{job}:{name} ...", flush=True)
                frame_path = Path(tmp) / f"{job}-{name}.parquet"
                args = [job, name, str(data_dir), "--out", str(frame_path)]
                if job == "materialize":
                    client.flushall()
                    args += ["--redis-url", f"127.0.0.1:{port}", "--first", str(first), "--last", str(last)]
                run = _run(args, Path(tmp) / f"{job}-{name}.log", timeout_s)
                if "failed" not in run and job == "materialize":
                    run["online_keys"] = client.dbsize()
                    frame = online_features(open_store(settings, online_only=True), churn_service, ids)
                    run["sample_customers_without_features"] = _without_features(frame, churn_features)
                    online[name] = frame
                elif "failed" not in run:
                    frame = pd.read_parquet(frame_path)
                    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns, UTC]")
                    run["rows_without_features"] = _without_features(frame, churn_features)
                    trained[name] = frame
                results[job][name] = run
                print(f"{job}:{name}: {run}", flush=True)
        finally:
            stop(redis)
    for job, frames, key in (("materialize", online, ["customer_id"]), ("historical", trained, KEY)):
        baseline = next(iter(JOBS[job]))
        for name, frame in frames.items():
            if name != baseline and baseline in frames:
                results["same_values"][job][f"{name} vs {baseline}"] = same_values(frames[baseline], frame, key)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    return results


def table(results: dict) -> str:
    """The results as a short text table; "no features": sampled customers (materialize) or training rows
    (historical) with every churn feature missing."""
    lines = [(f"{'job':<12}{'variant':<22}{'seconds':>9}{'ray start':>11}{'peak RSS':>10}{'peak PSS':>10}"
              f"{'no features':>13}  values"), "-" * 110]
    for job, variants in JOBS.items():
        baseline = next(iter(variants))
        for name, run in results[job].items():
            agreement = results["same_values"][job].get(f"{name} vs {baseline}")
            if name == baseline:
                values = "baseline"
            elif agreement is None:
                values = "-"
            elif agreement["differing"] == 0 and agreement["rows_a"] == agreement["rows_b"] == agreement["matched"]:
                values = "same"
            else:
                values = (f"{agreement['differing']} of {agreement['matched']} matched rows differ "
                          f"({agreement['rows_b']} rows vs {agreement['rows_a']})")
            if "failed" in run:
                lines.append(f"{job:<12}{name:<22}{'failed':>9}{'':>11}{run['peak_rss_gb']:>9.2f}G{run['peak_pss_gb']:>9.2f}G"
                             f"{'':>13}  {run['failed'][:120]}")
                continue
            start = f"{run['ray_start_s']:.1f}" if run.get("ray_start_s") is not None else "-"
            missing = run.get("sample_customers_without_features", run.get("rows_without_features"))
            lines.append(f"{job:<12}{name:<22}{run['seconds']:>9.1f}{start:>11}{run['peak_rss_gb']:>9.2f}G"
                         f"{run['peak_pss_gb']:>9.2f}G{missing:>13}  {values}")
    return "\n".join(lines)


if __name__ == "__main__":
    app()
