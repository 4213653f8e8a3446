"""Benchmark of the drift report: 100,000 logged rows of every churn feature against the
10,000-row training reference, in one run:

* the command as a pipeline runs it (`python -m monitoring drift-report`, a fresh process:
  imports, reading both files, the report, HTML and JSON written);
* the report alone, in a warm process, as built (one ValueDrift per column);
* the same with Evidently's DataDriftPreset, the obvious way to write it.

The rows are real feature rows of the data folder (`make features` first), drawn with
replacement. Writes loadtests/results/drift_report.json and .md.

    python -m loadtests.bench_drift [--rows 100000]
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core.feature_sets import CHURN_FEATURES
from core.settings import get_settings
from monitoring.drift import SCORE, run_report

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 20.0


def preset_report(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=columns)
    Report([DataDriftPreset(columns=columns)]).run(Dataset.from_pandas(current[columns], data_definition=definition),
                                                   Dataset.from_pandas(reference[columns], data_definition=definition))


def main(rows: Annotated[int, typer.Option(help="Logged rows in the window.")] = 100_000,
         reference_rows: Annotated[int, typer.Option(help="Rows in the reference.")] = 10_000) -> None:
    settings = get_settings()
    table_path = settings.features_dir / "customer_features.parquet"
    if not table_path.exists():
        raise typer.BadParameter(f"{table_path} is missing: run `make features` first", param_hint="DATA_DIR")
    table = pd.read_parquet(table_path, columns=CHURN_FEATURES)
    rng = np.random.default_rng(0)
    reference = table.sample(reference_rows, replace=True, random_state=1).reset_index(drop=True)
    reference[SCORE] = rng.beta(1, 12, len(reference))
    current = table.sample(rows, replace=True, random_state=2).reset_index(drop=True)
    current[SCORE] = rng.beta(1, 12, len(current))

    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reference.to_parquet(folder / "reference.parquet")
        current.to_parquet(folder / "current.parquet")
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "monitoring", "drift-report", "--model", "churn", "--version", "bench",
             "--reference", str(folder / "reference.parquet"), "--current", str(folder / "current.parquet"),
             "--reports-dir", str(folder / "reports"), "--no-workspace"],
            capture_output=True, text=True, env={**os.environ, "DATA_DIR": str(folder)})
        timings["command_cold_s"] = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"drift-report failed:\n{done.stderr[-2000:]}")

    columns = [*CHURN_FEATURES, SCORE]
    run_report(reference.head(2000), current.head(2000), CHURN_FEATURES)  # imports and first-call costs
    started = time.perf_counter()
    result = run_report(reference, current, CHURN_FEATURES)
    timings["report_warm_s"] = time.perf_counter() - started
    started = time.perf_counter()
    preset_report(reference, current, columns)
    timings["report_warm_drift_preset_s"] = time.perf_counter() - started

    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": rows, "reference_rows": reference_rows, "columns": len(columns),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "target_s": TARGET_S,
        "meets_target": timings["command_cold_s"] < TARGET_S,
        "drifted_features_found": result.summary["drifted_features"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift_report.json").write_text(json.dumps(out, indent=2))
    lines = ["# Drift report benchmark", "",
             f"{rows:,} logged rows x {len(columns)} columns (every churn feature and the score) against a "
             f"{reference_rows:,}-row reference; {out['machine']['cpus']} CPUs, one run.", "",
             "| what | seconds |", "|---|---:|",
             f"| `python -m monitoring drift-report`, fresh process, HTML + JSON written | {timings['command_cold_s']:.1f} |",
             f"| the report alone, warm process (one ValueDrift per column) | {timings['report_warm_s']:.1f} |",
             f"| the same with Evidently's DataDriftPreset | {timings['report_warm_drift_preset_s']:.1f} |", "",
             f"Target: under {TARGET_S:.0f} s for the command: {'met' if out['meets_target'] else 'NOT met'}."]
    (RESULTS / "drift_report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
