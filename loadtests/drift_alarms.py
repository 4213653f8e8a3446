"""How often drift reports cry wolf, and what they find: the drift decisions measured on the data
folder's own customers, against the champion's served reference, in one run.

* False alarms: windows with no drift, drawn from the served population: customers of the latest
  snapshot (what the online store serves) and of the one before it (another day), with
  replacement, as requests repeat customers. Per window size: the mean number of features flagged
  and how many windows would fire the alert (a drifted share above ALERT_SHARE).
* Power: windows of the latest snapshot with a shift of known size injected, then scored by the
  version as the service would: a mean shift of 0.1, 0.25 and 0.5 standard deviations on four
  features; a category share moved by 5 and 10 points (travel up, groceries down); the night share
  up by 0.05 and 0.1. Per shift and size: the share of injected features found, and the precision
  (found injected features / all features flagged).

    python -m loadtests.drift_alarms [--windows 20] [--repeats 5]   (make bench-drift; needs `make up`)

Writes loadtests/results/drift_alarms.{json,md}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core.feature_sets import GROWS_WITH_TIME
from core.settings import get_settings
from monitoring.drift import ALERT_SHARE, SCORE, run_report

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (1_000, 10_000)
MEAN_SHIFTED = ["avg_amount_30d", "txn_count_90d", "gap_mean_90d", "distinct_merchants_90d"]


@dataclass(frozen=True)
class Shift:
    name: str
    features: tuple[str, ...]  # the features it moves
    size: float

    def apply(self, window: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
        moved = window.copy()
        if self.name == "mean":
            for name in self.features:
                moved[name] += self.size * reference[name].std()
        elif self.name == "category share":
            travel, groceries = self.features
            taken = np.minimum(moved[groceries], self.size)  # points moved from groceries to travel
            moved[groceries] -= taken
            moved[travel] = np.minimum(moved[travel] + taken, 1.0)
        else:  # a rate
            [name] = self.features
            moved[name] = np.minimum(moved[name] + self.size, 1.0)
        return moved

    @property
    def label(self) -> str:
        unit = " sd" if self.name == "mean" else (" points" if self.name == "category share" else "")
        size = f"{100 * self.size:.0f}" if self.name == "category share" else f"{self.size:g}"
        return f"{self.name} +{size}{unit}"


SHIFTS = (
    *[Shift("mean", tuple(MEAN_SHIFTED), k) for k in (0.1, 0.25, 0.5)],
    *[Shift("category share", ("share_travel_90d", "share_groceries_90d"), d) for d in (0.05, 0.10)],
    *[Shift("night share", ("night_share_90d",), d) for d in (0.05, 0.10)],
)


class Population:
    """The served population of one family's version: its snapshots, its scorer, its reference."""

    def __init__(self, table: pd.DataFrame, loaded, reference: pd.DataFrame):
        from bentos.frames import score_frame

        self.loaded, self.reference, self.score = loaded, reference, lambda frame: score_frame(loaded, frame)
        self.features = [c for c in reference.columns if c != SCORE]
        self.compared = [f for f in self.features if f not in GROWS_WITH_TIME]
        days = sorted(table["event_timestamp"].unique())[-2:]
        self.days = [str(pd.Timestamp(d).date()) for d in days]
        self.snapshots = [table[table["event_timestamp"] == d].reset_index(drop=True) for d in days]

    def window(self, rows: int, seed: int, day: int = -1) -> pd.DataFrame:
        return self.snapshots[day].sample(rows, replace=True, random_state=seed)[self.features].reset_index(drop=True)

    def report(self, window: pd.DataFrame) -> dict:
        return run_report(self.reference, window.assign(score=self.score(window)), self.features).summary


def false_alarms(population: Population, windows: int, sizes=SIZES) -> list[dict]:
    rows = []
    for size in sizes:
        for i in range(windows):
            day = i % len(population.snapshots)
            summary = population.report(population.window(size, seed=1000 * size + i, day=day))
            rows.append({"rows": size, "day": population.days[day], "flagged": summary["drifted_features"],
                         "share": summary["drift_share"], "alert": summary["drift_share"] > ALERT_SHARE,
                         "prediction_drift": summary["prediction_drift"]["drifted"]})
    return rows


def power(population: Population, repeats: int, sizes=SIZES, shifts=SHIFTS) -> list[dict]:
    rows = []
    for shift in shifts:
        for size in sizes:
            for i in range(repeats):
                window = shift.apply(population.window(size, seed=7 * size + i), population.reference)
                flagged = set(population.report(window)["drifted_features"])
                rows.append({"shift": shift.label, "rows": size, "injected": len(shift.features),
                             "found": len(flagged & set(shift.features)), "others": sorted(flagged - set(shift.features))})
    return rows


def load_population(settings, family: str = "churn") -> Population:
    from bentos.loading import from_registry
    from core.registry import read_plan
    from monitoring.drift import load_reference

    table_path = settings.features_dir / "customer_features.parquet"
    if not table_path.exists():
        raise typer.BadParameter(f"{table_path} is missing: run `make up` (or data, features, train) first", param_hint="DATA_DIR")
    version = read_plan(family, settings.tracking_uri).champion
    cache = settings.data_dir / "model_cache"
    return Population(pd.read_parquet(table_path), from_registry(family, version, settings.tracking_uri, cache),
                      load_reference(family, version, settings.tracking_uri, cache))


def main(windows: Annotated[int, typer.Option(help="Windows with no drift per size.")] = 20,
         repeats: Annotated[int, typer.Option(help="Windows per shift and size.")] = 5) -> None:
    from tqdm import tqdm

    population = load_population(get_settings())
    with tqdm(total=2, desc="false alarms, then power", unit="study") as bar:
        nulls = false_alarms(population, windows)
        bar.update()
        shifts = power(population, repeats)
        bar.update()
    null_table = pd.DataFrame(nulls).assign(count=lambda f: f["flagged"].map(len))
    power_table = pd.DataFrame(shifts)
    by_size = null_table.groupby("rows").agg(windows=("count", "size"), mean_flagged=("count", "mean"),
                                             most_flagged=("count", "max"), alerts=("alert", "sum"),
                                             prediction_drift=("prediction_drift", "sum"))
    found = power_table.groupby(["shift", "rows"], sort=False).apply(
        lambda g: pd.Series({"found": g["found"].sum() / g["injected"].sum(),
                             "precision": g["found"].sum() / max(1, g["found"].sum() + g["others"].map(len).sum())}),
        include_groups=False).unstack("rows")
    out = {"model": f"churn v{population.loaded.version}", "features": len(population.features),
           "reference_rows": len(population.reference), "days": population.days, "alert_share": ALERT_SHARE,
           "false_alarms": by_size.reset_index().to_dict("records"), "false_alarm_windows": nulls, "power": shifts}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift_alarms.json").write_text(json.dumps(out, indent=2, default=str))
    setup = (f"{out['model']}, {out['features']} features ({len(population.compared)} compared), against its served "
             f"reference ({out['reference_rows']:,} rows); windows of customers from the snapshots of "
             f"{' and '.join(population.days)}, drawn with replacement; the alert fires above a drifted share of {ALERT_SHARE:g}.")
    lines = ["# Drift decisions: false alarms and power", "", setup, "",
             "## Windows with no drift", "", "| rows | windows | mean features flagged | most in one window | alerts | prediction drift |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {size:,} | {r.windows:.0f} | {r.mean_flagged:.2f} | {r.most_flagged:.0f} | {r.alerts:.0f} | {r.prediction_drift:.0f} |"
              for size, r in by_size.iterrows()]
    lines += ["", "## Injected shifts: share of the moved features found (precision)", "",
              "| shift | " + " | ".join(f"{s:,} rows" for s in SIZES) + " |", "|---|" + "---:|" * len(SIZES)]
    lines += [f"| {shift} | " + " | ".join(f"{row[('found', s)]:.0%} ({row[('precision', s)]:.2f})" for s in SIZES) + " |"
              for shift, row in found.iterrows()]
    (RESULTS / "drift_alarms.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
