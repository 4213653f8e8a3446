"""The features stage at bank scale: a year of a million customers' transactions (about 100 M)
through `python -m training features`, as a user runs it, into Feast with a Redis online store.

The transactions are generated first under --data-dir (reused when a run of the same size is already
there; generation is not part of the pipeline's time). The run's memory is summed over its whole
process tree (the CLI, and Ray's processes when --engine ray), sampled every half second
(loadtests/memory.py): RSS, the upper bound the target is set on, and PSS. Redis is the store, not
the pipeline; its peak is written beside.

    python -m loadtests.bench_offline_scale                         # 1 M customers (make bench-offline-scale)
    python -m loadtests.bench_offline_scale --customers 2000 --out /tmp/scale.json   # a quick look

Writes loadtests/results/offline_scale.{json,md} (or --out), with the stages' times and an estimate
for 10 M customers on a Ray cluster.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import psutil
import typer

from loadtests.memory import TreeMemory
from loadtests.servers import ROOT, redis_server, stop
from training.pipeline import STAGES

RESULTS = ROOT / "loadtests" / "results"


def generated(data_dir: Path, customers: int, months: int, seed: int) -> dict:
    """Generate the data under data_dir/raw unless a generation of the same size is there."""
    marker = data_dir / "raw" / "generated.json"
    wanted = {"customers": customers, "months": months, "seed": seed}
    if marker.exists() and {k: v for k, v in json.loads(marker.read_text()).items() if k in wanted} == wanted:
        return json.loads(marker.read_text())
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "training", "data", "--data-dir", str(data_dir), "--customers", str(customers),
                    "--months", str(months), "--seed", str(seed), "--later-days", "0"], cwd=ROOT, check=True)
    done = {**wanted, "generate_s": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(done))
    return done


def estimate(summary: dict, cpus: int, customers: int, target_customers: int, workers: int, worker_cpus: int) -> dict:
    """The features stage for `target_customers` on `workers` Ray workers of `worker_cpus` cores, from
    this run's costs: the check's batches and the partitions (the same size each, more of them) are
    Ray tasks, whose core-seconds spread over every worker core; the duplicate-id pass and the
    concatenation run in one process and grow with the data as they are."""
    scale = target_customers / customers
    spread = scale * cpus / (workers * worker_cpus)  # these stages kept every core here busy
    return {
        "customers": target_customers,
        "partitions": round(summary["partitions"] * scale),
        "workers": workers,
        "cores_per_worker": worker_cpus,
        "duplicate_ids_s": round(summary["duplicate_ids_s"] * scale),
        "validate_s": round(summary["validate_s"] * spread),
        "features_and_online_s": round(summary["features_and_online_s"] * spread),
        "concatenate_s": round(summary["concatenate_s"] * scale),
        "assumptions": [
            f"partitions of the same size as here ({summary['accepted_rows'] / summary['partitions']:,.0f} transactions), "
            f"{round(summary['partitions'] * scale)} of them, so memory per task stays as measured",
            "the check's batches and the partitions kept both cores busy here, so their core-seconds spread over every worker core",
            "the data folder is shared storage as fast as this machine's disk",
            "the duplicate-id pass and the concatenation run in one process each, as today, and grow linearly",
            "Redis takes the workers' writes as fast as this machine's one Redis took two",
        ],
    }


def main(
    customers: Annotated[int, typer.Option(help="Customers to generate (about 100 transactions a year each).")] = 1_000_000,
    months: Annotated[int, typer.Option(help="Months of transactions.")] = 12,
    engine: Annotated[str, typer.Option(help="ENGINE of the features stage: local or ray.")] = "ray",
    partitions: Annotated[int, typer.Option(help="PARTITIONS of the features stage.")] = 64,
    data_dir: Annotated[Path, typer.Option(help="Where the data and the run's outputs go.")] = ROOT / "data" / "scale",
    out: Annotated[Path, typer.Option(help="The results' JSON (a .md beside it).")] = RESULTS / "offline_scale.json",
    seed: int = 42,
) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    generation = generated(data_dir, customers, months, seed)
    cpus = os.cpu_count() or 1
    redis, port = redis_server(data_dir)
    env = {**os.environ, "DATA_DIR": str(data_dir), "ONLINE_STORE": "redis", "REDIS_URL": f"127.0.0.1:{port}",
           "ENGINE": engine, "PARTITIONS": str(partitions), "RAY_NUM_CPUS": str(cpus)}
    log = data_dir / "features.log"
    try:
        started = time.perf_counter()
        with log.open("w") as output:
            process = subprocess.Popen([sys.executable, "-m", "training", "features"], cwd=ROOT, env=env,
                                       stdout=output, stderr=subprocess.STDOUT)
            with TreeMemory(process.pid) as memory:
                code = process.wait()
        total_s = time.perf_counter() - started
        if code:
            raise SystemExit(f"the features stage failed ({code}); its log, {log}, ends:\n{log.read_text()[-3000:]}")
        import redis as redis_client

        client = redis_client.Redis(port=port)
        redis_memory = client.info("memory")["used_memory_peak"]
        online_keys = client.dbsize()
    finally:
        stop(redis)
    summary = json.loads((data_dir / "features" / "summary.json").read_text())
    results = {
        "machine": {"cpus": cpus, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version()},
        "data": {"customers": customers, "months": months, "transactions": summary["accepted_rows"] + summary["rejected_rows"],
                 "accepted": summary["accepted_rows"], "rejected": summary["rejected_rows"],
                 "feature_rows": summary["feature_rows"], "labelled_rows": summary["labelled_rows"],
                 "stream_rows": summary["stream_rows"], "snapshots": len(summary["snapshots"])},
        "engine": engine,
        "partitions": partitions,
        "generate_s": generation.get("generate_s"),
        "stages_s": {k: summary[k] for k in STAGES},
        "total_s": round(total_s, 1),
        "peak_rss_gb": round(memory.peak_rss / 2**30, 2),
        "peak_pss_gb": round(memory.peak_pss / 2**30, 2),
        "target_peak_rss_gb": 12,
        "redis_peak_memory_gb": round(redis_memory / 2**30, 2),
        "online_keys": online_keys,
        "memory_timeline_gb": memory.timeline[::max(1, len(memory.timeline) // 60)],
        "estimate_10m_customers": [estimate(summary, cpus, customers, 10_000_000, workers, 8) for workers in (4, 16)],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict) -> str:
    d, s = r["data"], r["stages_s"]
    lines = [
        "# Features stage at scale",
        "",
        f"{d['customers']:,} synthetic customers × {d['months']} months: **{d['transactions']:,} transactions** "
        f"(generated in {r['generate_s']} s, not counted) → `python -m training features` with ENGINE={r['engine']}, "
        f"PARTITIONS={r['partitions']} → Feast, Redis online store. {r['machine']['cpus']} cores, "
        f"{r['machine']['memory_gb']} GB.",
        "",
        "| Stage | Seconds |",
        "|---|---|",
        f"| Duplicate ids: one pass over the ids, in the driver | {s['duplicate_ids_s']} |",
        f"| Check the file's batches into partitions ({r['engine']} tasks) | {s['validate_s']} |",
        f"| feast apply | {s['feast_apply_s']} |",
        f"| Features, labels and stream rows by partition; each partition's latest rows into Redis | {s['features_and_online_s']} |",
        f"| Concatenate the partitions' tables for training | {s['concatenate_s']} |",
        f"| **Whole run** (process start to exit) | **{r['total_s']}** |",
        "",
        f"Peak memory of the run, summed over its process tree: **RSS {r['peak_rss_gb']} GB** "
        f"(target under {r['target_peak_rss_gb']} GB; an upper bound, shared pages counted once per process), "
        f"PSS {r['peak_pss_gb']} GB. Redis peak: {r['redis_peak_memory_gb']} GB, "
        f"{r['online_keys']:,} keys.",
        f"Rows: {d['feature_rows']:,} feature rows over {d['snapshots']} snapshots, {d['labelled_rows']:,} labelled, "
        f"{d['stream_rows']:,} stream rows; {d['rejected']:,} transactions rejected.",
        "",
        "## Estimate for 10 M customers on a Ray cluster",
        "",
        "| Workers × cores | Partitions | Duplicate ids (s) | Check (s) | Features + online (s) | Concatenate (s) |",
        "|---|---|---|---|---|---|",
    ]
    for e in r["estimate_10m_customers"]:
        lines.append(f"| {e['workers']} × {e['cores_per_worker']} | {e['partitions']} | {e['duplicate_ids_s']} | {e['validate_s']} | "
                     f"{e['features_and_online_s']} | {e['concatenate_s']} |")
    lines += ["", "Assumptions:", *[f"- {a}" for a in r["estimate_10m_customers"][0]["assumptions"]], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    typer.run(main)
