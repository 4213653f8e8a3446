"""Fraud's training set on Feast's file (dask) and DuckDB offline stores, side by side: part of
`make bench-offline` (loadtests/bench_features.py), on a data folder the pipeline has built.

Each run is a process of its own, so its peak RSS is its own, and a run that outgrows
`memory_gb` (an address-space limit: it fails with MemoryError instead of taking the machine's
memory from everything else) or the time limit is a result, not the end of the benchmark.

    python -m loadtests.bench_offline_store compare DATA_DIR      # every run below, as JSON
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from loadtests.servers import ROOT

# (offline store, FeatureServices): v1's set on both, then v1's and v2's features together
RUNS = [("file", ("fraud_v1",)), ("duckdb", ("fraud_v1",)), ("duckdb", ("fraud_v2", "fraud_v1")), ("file", ("fraud_v2", "fraud_v1"))]

app = typer.Typer(add_completion=False)


@app.command()
def one(data_dir: Path, offline_store: str, services: list[str],
        out: Annotated[Path, typer.Option(help="Where the training set goes (Parquet).")]) -> None:
    """One training set: fraud's sampled transactions with `services`' features from `offline_store`,
    written to `out`; prints its rows, seconds and this process's peak RSS as JSON."""
    from core.settings import get_settings
    from core.store import open_store
    from training.pipeline import fraud_training_set

    settings = get_settings(data_dir=data_dir)
    feature_store = open_store(settings, offline_store=offline_store)
    started = time.perf_counter()
    frame = fraud_training_set(feature_store, settings, *services)
    seconds = time.perf_counter() - started
    frame.to_parquet(out, index=False)
    print(json.dumps({"rows": len(frame), "seconds": round(seconds, 1),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


def _limited(memory_gb: float):
    def limit() -> None:
        cap = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return limit


def same_values(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Rows of `a` and `b` matched on the transaction; how many matched and how many differ anywhere."""
    key = ["customer_id", "event_timestamp", "transaction_time", "amount", "device_id"]
    matched = a.merge(b, on=key, suffixes=("_a", "_b"))
    differing = np.zeros(len(matched), dtype=bool)
    for column in a.columns.difference(key):
        x, y = matched[f"{column}_a"], matched[f"{column}_b"]
        if x.dtype.kind in "fi" and y.dtype.kind in "fi":
            differing |= ~np.isclose(x.to_numpy(float), y.to_numpy(float), equal_nan=True, rtol=0, atol=0)
        else:
            differing |= ~((x == y) | (x.isna() & y.isna())).to_numpy()
    return {"rows_a": len(a), "rows_b": len(b), "matched": len(matched), "differing": int(differing.sum())}


@app.command()
def compare(data_dir: Path, memory_gb: Annotated[float, typer.Option(help="Address-space limit of each run.")] = 16.0,
            timeout_s: Annotated[float, typer.Option(help="Time limit of each run.")] = 900.0) -> dict:
    """Every run of RUNS; each run's rows, seconds and peak RSS, or how it failed; and whether the two
    stores gave fraud_v1's set the same values."""
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for offline_store, services in RUNS:
            name = f"{offline_store}:{'+'.join(services)}"
            out = Path(tmp) / f"{name.replace(':', '_')}.parquet"
            print(f"{name} ...", flush=True)
            started = time.perf_counter()
            try:
                done = subprocess.run([sys.executable, "-m", "loadtests.bench_offline_store", "one", str(data_dir), offline_store,
                                       *services, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, check=False,
                                      timeout=timeout_s, preexec_fn=_limited(memory_gb))
            except subprocess.TimeoutExpired:
                runs[name] = {"failed": f"still running after {timeout_s:.0f} s"}
                continue
            if done.returncode == 0:
                runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
            else:
                lines = done.stderr.splitlines()
                last = next((line for line in reversed(lines) if re.match(r"\w+(Error|Exception)\b", line)),
                            next((line for line in reversed(lines) if any(c.isalnum() for c in line)), "(no output)"))
                runs[name] = {"failed": f"exit {done.returncode} after {time.perf_counter() - started:.0f} s: {last[:200]}"}
            print(f"{name}: {runs[name]}", flush=True)
        file_v1, duckdb_v1 = (Path(tmp) / f"{store}_fraud_v1.parquet" for store in ("file", "duckdb"))
        agreement = same_values(pd.read_parquet(file_v1), pd.read_parquet(duckdb_v1)) \
            if file_v1.exists() and duckdb_v1.exists() else None
    result = {"memory_limit_gb": memory_gb, "runs": runs, "fraud_v1_file_vs_duckdb": agreement}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    app()
