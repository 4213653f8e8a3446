"""Command line of monitoring: `python -m monitoring --help`.

    python -m monitoring drift-report --model churn                      # the champion, last 24 h of the log
    python -m monitoring drift-report --model churn --reference training # against its training rows instead
    python -m monitoring drift-report --model fraud --current window.parquet --fail-above 0.3
    python -m monitoring drift-report --model churn --labels outcomes.csv # adds quality
    python -m monitoring verify                                          # the inference log against its chain
    python -m monitoring replay --model churn                            # its decisions, scored again
    python -m monitoring recover-log                                     # journals a killed service left

Each report goes to DATA_DIR/reports/drift/<model>-<time>/ (drift.html, drift.json, summary.json,
and quality.html when labels are given) and into the Evidently workspace DATA_DIR/evidently,
which `make drift-ui` serves.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from core.families import FAMILIES
from core.settings import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Monitoring: drift reports, and the inference log's checks.")
log = logging.getLogger(__name__)


@app.callback()
def _logging() -> None:
    import os

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "evidently", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def read_table(path: Path):
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def add_to_workspace(workspace: Path, model: str, snapshot, name: str) -> None:
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(workspace))
    project_name = f"fintech {model}"
    projects = ws.search_project(project_name)
    project = projects[0] if projects else ws.create_project(project_name, description=f"Drift of the {model} model's inputs and scores")
    ws.add_run(project.id, snapshot, name=name)


def headline(model: str, version: str, summary: dict) -> str:
    drifted = summary["drifted_features"]
    lines = [f"{model} version {version}: {len(drifted)} of {summary['features']} features drifted "
             f"({summary['drift_share']:.0%}){': ' + ', '.join(drifted) if drifted else ''}",
             f"  rows: {summary['current_rows']:,} in the window, {summary['reference_rows']:,} in the reference"]
    lines += [f"  not compared: {name}, {why}" for name, why in summary.get("not_compared", {}).items()]
    if raised := summary.get("raised_thresholds"):
        named = ", ".join(f"{name} {threshold:.2f}" for name, threshold in list(raised.items())[:6])
        more = f" and {len(raised) - 6} more (summary.json)" if len(raised) > 6 else ""
        lines.append(f"  thresholds raised to the usual movement between periods: {named}{more}")
    score = summary["prediction_drift"]
    if score.get("method"):
        lines.append(f"  prediction drift: {'yes' if score['drifted'] else 'no'} ({score['method']} {score['value']:.3g}, "
                     f"threshold {score['threshold']:g})")
    if summary.get("quality"):
        lines.append("  quality: " + ", ".join(f"{k} {v:.3g}" for k, v in summary["quality"].items()))
    return "\n".join(lines)


def scored(window, model: str, version: str, tracking_uri: str, cache: Path):
    """A window of features with the version's score of each row, as the service would give it."""
    from scoring.frames import score_frame
    from scoring.loading import from_registry

    loaded = from_registry(model, version, tracking_uri, cache)
    log.info("the window has no %s column: scoring its %s rows with %s version %s", "score", f"{len(window):,}", model, version)
    return window.assign(score=score_frame(loaded, window))


@app.command("drift-report")
def drift_report(
    model: Annotated[str, typer.Option(help="Model family: churn, fraud or segment.")] = "churn",
    version: Annotated[str | None, typer.Option(help="Registry version (default: the champion).")] = None,
    current: Annotated[Path | None, typer.Option(help=(
        "A file (.parquet, .csv) to use as the window instead of the log; without a `score` column, the version "
        "scores it as the service would."))] = None,
    since: Annotated[datetime | None, typer.Option(help="Window start, UTC (default: 24 hours ago).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Window end, UTC (default: now).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Outcomes (customer_id, time, label) to add model quality.")] = None,
    reference: Annotated[str, typer.Option(help=(
        "What to compare with: `served` (what the service sees, scored by the version: stored with it at registration), "
        "`training` (a sample of its training rows), or a file (.parquet, .csv) with the features and `score`."))] = "served",
    fail_above: Annotated[float | None, typer.Option(help="Exit 1 when the share of drifted features is above this.")] = None,
    reports_dir: Annotated[Path | None, typer.Option(help="Default: DATA_DIR/reports/drift.")] = None,
    workspace: Annotated[Path | None, typer.Option(help="Evidently workspace (default: DATA_DIR/evidently).")] = None,
    no_workspace: Annotated[bool, typer.Option("--no-workspace", help="Do not add the report to the workspace.")] = False,
    with_overridden: Annotated[bool, typer.Option("--with-overridden", help=(
        "Keep the logged rows whose features the caller set (left out by default).")) ] = False,
) -> None:
    """Compare a window of served data with what the model version was built for; write HTML and JSON."""
    from core.registry import RegistryUnavailable, read_plan
    from monitoring.drift import SCORE, attach_labels, load_reference, load_thresholds, read_log, run_report

    settings = get_settings()
    cache = settings.data_dir / "model_cache"
    if model not in FAMILIES:
        raise typer.BadParameter(f"choose one of {', '.join(FAMILIES)}", param_hint="--model")
    try:
        version = version or read_plan(model, settings.tracking_uri).champion
        if reference in ("served", "training"):
            ref = load_reference(model, version, settings.tracking_uri, cache, kind=reference)
        else:
            ref = read_table(Path(reference))
        features = [c for c in ref.columns if c != SCORE]
        until = until or datetime.now(UTC)
        since = since or until - timedelta(hours=24)
        window = read_table(current) if current else read_log(settings.data_dir / "inference_log" / model,
                                                               since, until, version=version, overridden=with_overridden)
        if SCORE not in window.columns:
            window = scored(window, model, version, settings.tracking_uri, cache)
        if labels:
            window = attach_labels(window, read_table(labels))
        thresholds = load_thresholds(model, version, settings.tracking_uri, cache)
        result = run_report(ref, window, features, categorical_score=FAMILIES[model].categorical, thresholds=thresholds)
    except (ValueError, RegistryUnavailable, FileNotFoundError) as e:  # DriftInputError is a ValueError
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = (reports_dir or settings.data_dir / "reports" / "drift") / f"{model}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    result.drift.save_html(str(folder / "drift.html"))
    result.drift.save_json(str(folder / "drift.json"))
    if result.quality is not None:
        result.quality.save_html(str(folder / "quality.html"))
    summary = {"model": model, "version": version, "reference": reference, "window": "file " + str(current) if current else
               f"inference log {since.isoformat()} to {until.isoformat()}", "created": stamp, **result.summary}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if not no_workspace:
        add_to_workspace(workspace or settings.data_dir / "evidently", model, result.drift, f"{model} v{version} {stamp}")
    typer.echo(headline(model, version, result.summary))
    typer.echo(f"  report: {folder / 'drift.html'}")
    if fail_above is not None and result.summary["drift_share"] > fail_above:
        typer.secho(f"drift share {result.summary['drift_share']:.2f} is above {fail_above}", fg="red", err=True)
        raise typer.Exit(1)


@app.command("prune-log")
def prune_log(
    days: Annotated[int, typer.Option(min=1, help="Keep this many days before today (UTC) and today; remove the older ones.")] = 90,
) -> None:
    """Remove the inference log's days past the retention, for every family (the log is personal
    data: customer ids and their feature values). Run daily by the CronJob fintech-inference-log-retention."""
    import shutil

    from core.decision_log import note_pruned

    settings = get_settings()
    oldest = (datetime.now(UTC) - timedelta(days=days)).date()
    removed = 0
    for folder in sorted((settings.data_dir / "inference_log").glob("*/date=*")):
        try:
            day = datetime.strptime(folder.name.removeprefix("date="), "%Y-%m-%d").date()
        except ValueError:
            continue  # not a day's folder of the log
        if day < oldest:
            note_pruned(folder)  # where each writer's chain now starts, for `verify`
            shutil.rmtree(folder)
            removed += 1
            log.info("removed %s (older than %d days)", folder, days)
    typer.echo(f"removed {removed} day(s) of the inference log older than {oldest} (retention {days} days)")



def _families(model: str | None) -> list[str]:
    if model is not None and model not in FAMILIES:
        raise typer.BadParameter(f"choose one of {', '.join(FAMILIES)}", param_hint="--model")
    return [model] if model else list(FAMILIES)


@app.command("verify")
def verify(
    model: Annotated[str | None, typer.Option(help="One family (default: every family with a log).")] = None,
    log_dir: Annotated[Path | None, typer.Option(help="The inference log (default: DATA_DIR/inference_log).")] = None,
) -> None:
    """Check the inference log against its hash chain: name every row edited, removed, reordered or
    inserted, and print each writer's head (its last row and chain) to compare with the one the
    service logged. Exit 1 when anything is found."""
    from monitoring.integrity import check_chain

    root = log_dir or get_settings().data_dir / "inference_log"
    found = 0
    for family in _families(model):
        if not (root / family).exists():
            continue
        report = check_chain(root / family, family)
        broken = [f for f in report.findings if f.kind != "unchained"]
        found += len(broken)
        typer.echo(f"{family}: {report.rows:,} rows of {report.writers} writer(s), "
                   + (f"{len(broken)} finding(s)" if broken else "the chain holds"))
        for finding in report.findings:
            typer.secho(f"  {finding}", fg="red" if finding.kind != "unchained" else None)
        for writer, (seq, chain) in sorted(report.heads.items()):
            typer.echo(f"  head {writer}: seq {seq} {chain}")
    if found:
        raise typer.Exit(1)


@app.command("replay")
def replay_log(
    model: Annotated[str, typer.Option(help="The family whose decisions to replay.")],
    since: Annotated[datetime | None, typer.Option(help="From this time (UTC) [default: 24 hours before --until].")] = None,
    until: Annotated[datetime | None, typer.Option(help="Until this time (UTC) [default: now].")] = None,
    log_dir: Annotated[Path | None, typer.Option(help="The inference log (default: DATA_DIR/inference_log).")] = None,
) -> None:
    """Score the logged decisions of a window again, each with its logged version and features, and
    say how many come out exactly as logged (score and decision). Exit 1 when any does not."""
    from core.registry import RegistryUnavailable
    from monitoring.drift import read_log
    from monitoring.integrity import replay
    from scoring.loading import from_registry

    settings = get_settings()
    _families(model)
    until = until or datetime.now(UTC)
    since = since or until - timedelta(hours=24)
    try:
        window = read_log((log_dir or settings.data_dir / "inference_log") / model, since, until,
                          roles=("champion", "challenger", "shadow"), overridden=True)
        report = replay(window, model, lambda version: from_registry(model, version, settings.tracking_uri,
                                                                     settings.data_dir / "model_cache"))
    except (ValueError, RegistryUnavailable, FileNotFoundError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"{model}: {report.reproduced:,} of {report.rows:,} logged decisions reproduced exactly "
               f"({since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC)")
    for version, (rows, same) in report.by_version.items():
        typer.echo(f"  version {version}: {same:,} of {rows:,}")
    for difference in report.differences:
        typer.secho(f"  differs: {json.dumps(difference)}", fg="red")
    if report.reproduced != report.rows:
        raise typer.Exit(1)


@app.command("recover-log")
def recover_log(
    log_dir: Annotated[Path | None, typer.Option(help="The inference log (default: DATA_DIR/inference_log).")] = None,
) -> None:
    """Write the journals that stopped services left (killed before their last rows were written
    as files) into the log, for every family. A running service's journal is left alone; a
    service does this itself when it starts."""
    from core.decision_log import recover

    root = log_dir or get_settings().data_dir / "inference_log"
    rows = 0
    for family in FAMILIES:
        for path, count in recover(root / family, family) if (root / family).exists() else []:
            typer.echo(f"{family}: {count:,} rows to {path}")
            rows += count
    typer.echo(f"recovered {rows:,} rows from stopped services' journals")
