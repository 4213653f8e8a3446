"""How stable are the principal reasons of an adverse decision? For churn and fraud, the champion
scores its served reference (the rows stored with the version: what the service sees) through the
service's own scorer, as the routes do; on each row with an adverse decision, each input feature in
turn is moved by +1% and by -1%, and the row scored again. Only features with fractional values
move: a flag, a category's index or a count has no value 1% away (0.99 of a flag is read as 0 by a
split at 1, which would flip it). Reported, per family:

* `order_kept`: the share of those perturbations after which the principal reasons are the same
  codes in the same order (the figure an adverse-action notice depends on);
* `set_kept`: the same codes in any order; `first_kept`: the same first reason;
* `decision_changed`: the share that moved the decision itself (no longer adverse, or adverse
  under another risk level): counted apart, and in none of the above;
* `moved`: perturbations that changed a value (1% of 0 is 0); each share is also given over
  these alone.

The same with every such feature moved at once, each by +1% or -1% at random (`all_at_once`).
No target: the figures are what the design gives. Writes loadtests/results/reasons.{json,md}.

    python -m loadtests.bench_reasons [--rows 500]
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core.families import FAMILIES
from core.registry import CHAMPION, mlflow_client
from core.settings import get_settings
from monitoring.drift import load_reference
from scoring.base import build_scorer
from scoring.frames import FrameReader
from scoring.loading import from_registry

RESULTS = Path(__file__).resolve().parent / "results"
STEP = 0.01


def principal(scorer, table: pd.DataFrame) -> tuple[list[str], list[tuple[str, ...]]]:
    """Each row's decision and its principal reasons' codes, as the service answers them."""
    scorer.reader = FrameReader(table)
    results = scorer.score([{"customer_id": str(i)} for i in range(len(table))])
    field = FAMILIES[scorer.info.name].decision_field
    return [str(r[field]) for r in results], [tuple(x["code"] or x["feature"] for x in r["principal_reasons"]) for r in results]


def continuous(table: pd.DataFrame) -> list[str]:
    """The features with a value that is not a whole number: a flag, a category's index or a count
    has no value 1% away (0.99 of a flag reads as 0 to a split at 1), so those are left as they are."""
    return [f for f in table.columns if (table[f].dropna() % 1 != 0).any()]


def compare(base_decisions, base, decisions, codes, moved: np.ndarray) -> dict:
    """Counts of kept order, kept set, kept first reason and changed decisions, over all
    perturbations and over those that moved a value."""
    counts = {"perturbations": len(codes), "moved": int(moved.sum())}
    same_decision = np.array([d == b for d, b in zip(decisions, base_decisions)])
    checks = {"order_kept": [c == b for c, b in zip(codes, base)],
              "set_kept": [set(c) == set(b) for c, b in zip(codes, base)],
              "first_kept": [c[:1] == b[:1] for c, b in zip(codes, base)]}
    for name, kept in checks.items():
        kept = np.array(kept) & same_decision
        counts[name] = round(float(kept.mean()), 4)
        counts[f"{name}_of_moved"] = round(float(kept[moved].mean()), 4) if moved.any() else None
    counts["decision_changed"] = round(float((~same_decision).mean()), 4)
    return counts


def family_stability(family: str, settings, rows: int, cache: Path, seed: int = 0) -> dict:
    client = mlflow_client(settings.tracking_uri)
    version = str(client.get_model_version_by_alias(family, CHAMPION).version)
    loaded = from_registry(family, version, settings.tracking_uri, cache)
    features = loaded.metadata["features"]
    reference = load_reference(family, version, settings.tracking_uri, cache)[features].astype(float).reset_index(drop=True)
    scorer = build_scorer(loaded, loaded.info(CHAMPION), FrameReader(reference), top_reasons=5)
    decisions, codes = principal(scorer, reference)
    adverse = [i for i, c in enumerate(codes) if c]
    chosen = np.random.default_rng(seed).permutation(adverse)[:rows]
    table = reference.iloc[chosen].reset_index(drop=True)
    base_decisions, base = [decisions[i] for i in chosen], [codes[i] for i in chosen]
    moving = continuous(reference)
    started = time.perf_counter()
    one_at_a_time = {"decisions": [], "codes": [], "moved": []}
    per_feature = {}
    for feature in moving:
        for sign in (1, -1):
            moved_table = table.copy()
            moved_table[feature] = table[feature] * (1 + sign * STEP)
            d, c = principal(scorer, moved_table)
            moved = (moved_table[feature] != table[feature]).to_numpy()
            one_at_a_time["decisions"] += d
            one_at_a_time["codes"] += c
            one_at_a_time["moved"].append(moved)
            kept = [x == y and a == b for x, y, a, b in zip(c, base, d, base_decisions)]
            per_feature.setdefault(feature, []).extend(kept)
    moved = np.concatenate(one_at_a_time["moved"])
    each = compare(base_decisions * len(moving) * 2, base * len(moving) * 2, one_at_a_time["decisions"],
                   one_at_a_time["codes"], moved)
    signs = np.random.default_rng(seed + 1).choice([-1.0, 1.0], size=(len(table), len(moving)))
    jointly = table.copy()
    jointly[moving] = table[moving] * (1 + STEP * signs)
    d, c = principal(scorer, jointly)
    together = compare(base_decisions, base, d, c, (jointly != table).to_numpy().any(axis=1))
    least = sorted(per_feature, key=lambda f: np.mean(per_feature[f]))[:5]
    return {"version": version, "features": len(features), "moved_features": len(moving),
            "whole_number_features": [f for f in features if f not in moving], "reference_rows": len(reference), "adverse_rows": len(adverse),
            "rows": len(table), "mean_principal_reasons": round(float(np.mean([len(b) for b in base])), 2),
            "one_at_a_time": each, "all_at_once": together,
            "least_stable_features": {f: round(float(np.mean(per_feature[f])), 4) for f in least},
            "seconds": round(time.perf_counter() - started, 1)}


def render(results: dict) -> str:
    lines = ["# Principal reasons under a 1% change of the inputs", "",
             f"Up to {results['config']['rows']} rows with an adverse decision per family (all there are, when fewer), "
             "drawn from the champion's served reference; each feature with fractional values moved by +1% and by -1% in turn (`one at a time`), then "
             "every such feature at once by +1% or -1% at random (`all at once`). Flags, category indices and counts "
             "are not moved: they have no value 1% away. Kept: the same principal reasons (codes) after the change; a "
             "change of the decision itself counts as not kept and is given apart. No target: this is what the "
             "design gives (python -m loadtests.bench_reasons).", "",
             "| family | version | rows | reasons per row | perturbation | order kept | set kept | first kept | "
             "decision changed | order kept, moved values only |", "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for family, r in results["families"].items():
        for kind in ("one_at_a_time", "all_at_once"):
            x = r[kind]
            of_moved = "" if x["order_kept_of_moved"] is None else f"{100 * x['order_kept_of_moved']:.1f}%"
            lines.append(f"| {family} | {r['version']} | {r['rows']} | {r['mean_principal_reasons']} | {kind.replace('_', ' ')} "
                         f"({x['perturbations']:,}) | {100 * x['order_kept']:.1f}% | {100 * x['set_kept']:.1f}% | "
                         f"{100 * x['first_kept']:.1f}% | {100 * x['decision_changed']:.2f}% | "
                         f"{of_moved} |")
    lines += ["", "Features moved: " + "; ".join(f"{family} {r['moved_features']} of {r['features']}"
                                               for family, r in results["families"].items()), "",
              "Features whose ±1% change most often changes the principal reasons (share kept):", ""]
    for family, r in results["families"].items():
        lines.append(f"- {family}: " + ", ".join(f"{f} {100 * v:.1f}%" for f, v in r["least_stable_features"].items()))
    return "\n".join(lines) + "\n"


def main(rows: Annotated[int, typer.Option(help="Rows with an adverse decision per family.")] = 500,
         out: Annotated[Path, typer.Option(help="Folder for reasons.{json,md}.")] = RESULTS) -> None:
    settings = get_settings()
    results = {"config": {"rows": rows, "step": STEP, "machine": platform.machine()}, "families": {}}
    with tempfile.TemporaryDirectory() as cache:
        for family in (name for name, f in FAMILIES.items() if f.adverse):
            print(f"{family}: scoring its served reference, then {rows} adverse rows moved feature by feature", flush=True)
            results["families"][family] = family_stability(family, settings, rows, Path(cache))
            print(json.dumps(results["families"][family]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reasons.json").write_text(json.dumps(results, indent=2))
    (out / "reasons.md").write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    typer.run(main)
