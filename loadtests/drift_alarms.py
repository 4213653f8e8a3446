"""How often drift reports cry wolf, and what they find: the drift decisions measured on the data
folder's own customers, against the champion's served reference, in one run.

* False alarms, for churn, fraud and segment: windows with no drift, drawn from the served
  population with replacement, as requests repeat customers: customers of the latest snapshot
  (what the online store serves) and of the one before it (another day); for fraud, transactions
  of the last period's first and second halves. Per window size: the mean number of features
  flagged and how many windows would fire the alert (a drifted share above ALERT_SHARE).
* Power, for churn: windows of the latest snapshot with a shift of known size injected, then scored by the
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
from monitoring.drift import ALERT_SHARE, DISTANCE_THRESHOLD, SCORE, run_report

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
    """The served population of one family's version, as pools of rows from different days; its
    scorer and its served reference."""

    def __init__(self, pools: dict[str, pd.DataFrame], loaded, reference: pd.DataFrame, thresholds: dict[str, float]):
        from scoring.frames import score_frame

        self.loaded, self.reference, self.score = loaded, reference, lambda frame: score_frame(loaded, frame)
        self.thresholds = thresholds
        self.family = loaded.family
        self.features = [c for c in reference.columns if c != SCORE]
        self.compared = [f for f in self.features if f not in GROWS_WITH_TIME]
        self.days, self.pools = list(pools), list(pools.values())

    def window(self, rows: int, seed: int, day: int = -1) -> pd.DataFrame:
        return self.pools[day].sample(rows, replace=True, random_state=seed)[self.features].reset_index(drop=True)

    def report(self, window: pd.DataFrame) -> dict:
        return run_report(self.reference, window.assign(score=self.score(window)), self.features,
                          categorical_score=self.family == "segment", thresholds=self.thresholds).summary


def served_pools(settings, family: str) -> dict[str, pd.DataFrame]:
    """Rows the service sees on different days: customers of the last two snapshots (churn,
    segment), or the last period's transactions split at its middle (fraud)."""
    if family == "fraud":
        from training import store
        from training.pipeline import served_population

        tx = served_population(store.open_store(settings), settings, "fraud", rows=60_000, seed=settings.seed + 1)
        middle = tx["event_timestamp"].min() + (tx["event_timestamp"].max() - tx["event_timestamp"].min()) / 2
        halves = {"before": tx[tx["event_timestamp"] < middle], "after": tx[tx["event_timestamp"] >= middle]}
        return {f"{when} {middle.date()}": half.reset_index(drop=True) for when, half in halves.items()}
    table = pd.read_parquet(settings.features_dir / "customer_features.parquet")
    days = sorted(table["event_timestamp"].unique())[-2:]
    return {str(pd.Timestamp(d).date()): table[table["event_timestamp"] == d].reset_index(drop=True) for d in days}


def false_alarms(population: Population, windows: int, sizes=SIZES) -> list[dict]:
    rows = []
    for size in sizes:
        for i in range(windows):
            day = i % len(population.pools)
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
    from core.registry import read_plan
    from monitoring.drift import load_reference, load_thresholds
    from scoring.loading import from_registry

    table_path = settings.features_dir / "customer_features.parquet"
    if not table_path.exists():
        raise typer.BadParameter(f"{table_path} is missing: run `make up` (or data, features, train) first", param_hint="DATA_DIR")
    version = read_plan(family, settings.tracking_uri).champion
    cache = settings.data_dir / "model_cache"
    return Population(served_pools(settings, family), from_registry(family, version, settings.tracking_uri, cache),
                      load_reference(family, version, settings.tracking_uri, cache),
                      load_thresholds(family, version, settings.tracking_uri, cache))


def null_summary(population: Population, nulls: list[dict]) -> pd.DataFrame:
    """Per window size: how many windows with no drift, features flagged, alerts, prediction drift."""
    counted = pd.DataFrame(nulls).assign(count=lambda f: f["flagged"].map(len))
    return counted.groupby("rows").agg(windows=("count", "size"), mean_flagged=("count", "mean"), most_flagged=("count", "max"),
                                       alerts=("alert", "sum"), prediction_drift=("prediction_drift", "sum"))


def main(windows: Annotated[int, typer.Option(help="Windows with no drift per size and family.")] = 20,
         repeats: Annotated[int, typer.Option(help="Churn windows per shift and size.")] = 5) -> None:
    from tqdm import tqdm

    settings = get_settings()
    out: dict = {"alert_share": ALERT_SHARE, "false_alarms": {}}
    setup = (f"Each family's champion against its served reference; windows drawn with replacement from what the "
             f"service sees on two days; the alert fires above a drifted share of {ALERT_SHARE:g}.")
    lines = ["# Drift decisions: false alarms and power", "", setup, "",
             "## Windows with no drift", "",
             "| family | days | rows | windows | mean features flagged | most in one window | alerts | prediction drift |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    families = ("churn", "fraud", "segment")
    raised: dict[str, dict[str, float]] = {}
    with tqdm(total=len(families) + 1, desc="false alarms per family, then churn's power", unit="study") as bar:
        for family in families:
            population = load_population(settings, family)
            if family == "churn":
                churn = population
            raised[family] = {f: t for f, t in population.thresholds.items() if t > DISTANCE_THRESHOLD and f in population.compared}
            nulls = false_alarms(population, windows)
            table = null_summary(population, nulls)
            out["false_alarms"][family] = {"model": f"{family} v{population.loaded.version}", "features": len(population.compared),
                                           "reference_rows": len(population.reference), "days": population.days,
                                           "by_size": table.reset_index().to_dict("records"), "windows": nulls}
            lines += [f"| {family} v{population.loaded.version} ({len(population.compared)} features, reference "
                      f"{len(population.reference):,} rows) | {' and '.join(population.days)} | {size:,} | {r.windows:.0f} | "
                      f"{r.mean_flagged:.2f} | {r.most_flagged:.0f} | {r.alerts:.0f} | {r.prediction_drift:.0f} |"
                      for size, r in table.iterrows()]
            bar.update()
        shifts = power(churn, repeats)
        bar.update()
    out["power"] = shifts
    out["raised_thresholds"] = raised
    lines += ["", f"## Distance thresholds raised to the usual movement (from {DISTANCE_THRESHOLD:g}; core/movement.py)", ""]
    lines += [f"- {family}: {len(names)} features" + (": " + ", ".join(f"`{f}` {t:.2f}" for f, t in names.items()) if names else "")
              for family, names in raised.items()]
    found = pd.DataFrame(shifts).groupby(["shift", "rows"], sort=False).apply(
        lambda g: pd.Series({"found": g["found"].sum() / g["injected"].sum(),
                             "precision": g["found"].sum() / max(1, g["found"].sum() + g["others"].map(len).sum())}),
        include_groups=False).unstack("rows")
    lines += ["", f"## Injected shifts (churn v{churn.loaded.version}): share of the moved features found (precision)", "",
              "| shift | " + " | ".join(f"{s:,} rows" for s in SIZES) + " |", "|---|" + "---:|" * len(SIZES)]
    lines += [f"| {shift} | " + " | ".join(f"{row[('found', s)]:.0%} ({row[('precision', s)]:.2f})" for s in SIZES) + " |"
              for shift, row in found.iterrows()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift_alarms.json").write_text(json.dumps(out, indent=2, default=str))
    (RESULTS / "drift_alarms.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
