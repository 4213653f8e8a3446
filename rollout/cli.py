"""Roll a new model version out: canary, promote on evidence, roll back. `python -m rollout --help`

    python -m rollout canary churn --version 2 --share 10 [--shadow]
    python -m rollout status churn
    python -m rollout promote churn      # exit 1 when a gate fails
    python -m rollout rollback churn
    python -m rollout retrain churn [--dry-run]   # a whole retraining cycle: rollout/retrain.py
    python -m rollout retrain-if-drifted churn    # the same, when the newest drift report is over the line
    python -m rollout choose fraud --service fraud_v2   # before fraud first serves: the better FeatureService

Exit codes: 0 done; 1 promotion refused by a gate (or, for retrain, by the guard); 2 the request or
the registry's state does not allow the step (another cycle holds the lock); 3 the registry does
not answer; 4 a retraining cycle failed (the champion serves on).

Every change is made in the MLflow registry (aliases and the registered model's serving.* tags),
then the running service is asked to follow it (POST /admin/reload); a service that is not
reachable picks it up when it next polls the registry.

The CLI is a client of the service like any other: it sends FINTECH_API_KEY (or the key in the
file FINTECH_API_KEY_FILE names, or the local key `make up` made), which needs the `admin` scope.
Before a change it asks the service who it is (GET /admin/whoami); a refused credential stops it
before anything changes. Each change is written to the audit log (core/audit.py) under that
client id; when the service cannot be asked (it is down: a rollback must still work), under the
local user, marked unverified.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from core.api_keys import client_headers
from core.registry import RegistryUnavailable, fail_fast, read_plan, unreachable
from core.settings import get_settings
from rollout.settings import get_gate_settings
from rollout.steps import (
    RolloutError,
    ask_service_to_reload,
    choose_features,
    fetch_metrics,
    identify,
    promote,
    readable,
    record,
    rollback,
    start_canary,
)

log = logging.getLogger(__name__)
EXIT_REFUSED, EXIT_ERROR, EXIT_NO_REGISTRY, EXIT_FAILED = 1, 2, 3, 4
app = typer.Typer(add_completion=False, no_args_is_help=True, help=(
    "Canary rollouts of model versions. Exit codes: 1 a gate refused the promotion; 2 the request or the "
    "registry's state does not allow the step; 3 the MLflow registry does not answer."))

Family = Annotated[str, typer.Argument(help="Model family: churn, fraud or segment.")]
ServiceUrl = Annotated[str | None, typer.Option(help="The running service (env PROMOTE_SERVICE_URL, default :3000).")]


@app.callback()
def _logging() -> None:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    fail_fast(timeout_s=10, retries=1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "feast", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retries: the error says what failed


def _run(step):
    from mlflow.exceptions import MlflowException

    try:
        return step()
    except (RolloutError, RegistryUnavailable, MlflowException) as e:
        if cause := unreachable(e):
            typer.secho(f"error: the MLflow registry at {get_settings().tracking_uri} does not answer "
                        f"({type(cause).__name__}); is it running, and is MLFLOW_TRACKING_URI its address?", fg="red", err=True)
            raise typer.Exit(EXIT_NO_REGISTRY) from e
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(EXIT_ERROR) from e


@app.command()
def canary(
    family: Family,
    version: Annotated[str | None, typer.Option(help="Registry version to try (default: the latest).")] = None,
    share: Annotated[float, typer.Option(min=0, max=100, help="Percent of customers it answers.")] = 10.0,
    shadow: Annotated[bool, typer.Option(help="Also score the champion's requests in the background.")] = False,
    service_url: ServiceUrl = None,
) -> None:
    """Make a version the challenger for a share of customers."""
    settings, gates = get_settings(), get_gate_settings()
    url, headers = service_url or gates.service_url, client_headers(settings.secrets_dir)
    who = _run(lambda: identify(url, headers))
    started = _run(lambda: start_canary(settings, family, version, share, shadow))
    record(settings, "canary", who, family, started)
    typer.echo(json.dumps(started))
    reason = f"canary {family} {started['challenger']} at {share:g}%"
    typer.echo(json.dumps(ask_service_to_reload(url, reason, headers), default=str))


@app.command()
def status(family: Family, service_url: ServiceUrl = None) -> None:
    """What the registry asks for, what the service serves, and during a canary, the decision flips
    on the challenger's rows so far (how often the champion would have decided otherwise)."""
    import httpx

    settings, gates = get_settings(), get_gate_settings()
    plan = _run(lambda: read_plan(family, settings.tracking_uri))
    typer.echo(json.dumps({"registry": plan.__dict__}))
    if plan.challenger is not None:
        from rollout.flips import decision_flips

        flips = _run(lambda: decision_flips(settings, family, plan.champion, plan.challenger))
        typer.echo(json.dumps({"flips": flips}))
    try:
        answer = httpx.get(f"{service_url or gates.service_url}/models/status", headers=client_headers(settings.secrets_dir),
                           timeout=10)
        typer.echo(json.dumps({"service": answer.json()[family] if answer.status_code == 200 else answer.json()}))
    except httpx.HTTPError as e:
        typer.echo(json.dumps({"service": f"not reachable: {e!r}"}))


@app.command(name="promote")
def promote_command(family: Family, service_url: ServiceUrl = None) -> None:
    """Run the gates over the canary window; promote only if all pass. Exit 1 when refused."""
    settings, gates = get_settings(), get_gate_settings()
    url = service_url or gates.service_url
    if _run(lambda: read_plan(family, settings.tracking_uri)).challenger is None:
        typer.secho(f"error: {family} has no challenger: start a canary first (make canary MODEL={family})", fg="red", err=True)
        raise typer.Exit(EXIT_ERROR)
    headers = client_headers(settings.secrets_dir)
    who = _run(lambda: identify(url, headers))
    report = _run(lambda: promote(settings, gates, family, fetch_metrics(url)))
    record(settings, "promote", who, family, {key: report[key] for key in (
        "decision", "champion", "challenger", "failed_gates", "report_files")})
    typer.echo(readable(report))
    typer.echo(f"report: {', '.join(report['report_files'])}")
    if report["decision"] != "promote":
        raise typer.Exit(EXIT_REFUSED)
    typer.echo(json.dumps(ask_service_to_reload(url, f"promote {family} {report['challenger']}", headers), default=str))


@app.command(name="rollback")
def rollback_command(family: Family, service_url: ServiceUrl = None) -> None:
    """Restore the previous champion and end any canary."""
    settings, gates = get_settings(), get_gate_settings()
    url, headers = service_url or gates.service_url, client_headers(settings.secrets_dir)
    who = _run(lambda: identify(url, headers))
    done = _run(lambda: rollback(settings, family))
    record(settings, "rollback", who, family, done)
    typer.echo(json.dumps(done))
    typer.echo(json.dumps(ask_service_to_reload(url, f"rollback {family} to {done['champion']}", headers), default=str))


Trigger = Annotated[str, typer.Option(help="What started the cycle, for its record: schedule, drift or manual.")]
DryRun = Annotated[bool, typer.Option(help="Search, register and guard, but move no alias and start no canary.")]


@app.command()
def retrain(family: Family, dry_run: DryRun = False, trigger: Trigger = "manual", service_url: ServiceUrl = None) -> None:
    """One retraining cycle: a time-boxed search on the newest labelled data, a new version, the guard
    against the champion, a canary in shadow, the gates; promoted or refused (exit 1)."""
    from rollout.retrain import CycleLocked, RetrainSettings, Service, run_cycle

    settings, gates = get_settings(), get_gate_settings()
    url, headers = service_url or gates.service_url, client_headers(settings.secrets_dir)
    who = _run(lambda: identify(url, headers))
    service = Service(metrics=lambda: fetch_metrics(url), reload=lambda reason: ask_service_to_reload(url, reason, headers))
    try:
        cycle = _run(lambda: run_cycle(settings, RetrainSettings(), gates, family, service, trigger, dry_run))
    except CycleLocked as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(EXIT_ERROR) from e
    except typer.Exit:
        raise
    except BaseException as e:
        record(settings, "retrain", who, family, {"outcome": "failed", "error": f"{type(e).__name__}: {e}"[:300]})
        typer.secho(f"error: the {family} cycle failed ({type(e).__name__}: {e}); the champion serves on", fg="red", err=True)
        raise typer.Exit(EXIT_FAILED) from e
    record(settings, "retrain", who, family, {key: cycle[key] for key in ("id", "outcome", "reason", "champion", "candidate")})
    typer.echo(json.dumps({key: cycle[key] for key in ("id", "outcome", "reason", "champion", "candidate", "figures")},
                          default=str))
    if cycle["outcome"] == "refused":
        raise typer.Exit(EXIT_REFUSED)


@app.command()
def choose(
    family: Family,
    service: Annotated[str, typer.Option(help="The other FeatureService to train the family on.")] = "fraud_v2",
) -> None:
    """Before the family first serves (make up): train it on SERVICE; that version becomes the
    champion if it beats the champion's PR-AUC on the out-of-time window by RETRAIN_MARGIN (report
    under DATA_DIR/reports/promotions). Exit 1 when the champion stays."""
    from rollout.retrain import RetrainSettings

    settings = get_settings()
    report = _run(lambda: choose_features(settings, family, service, RetrainSettings().margin))
    if report["decision"] == "unchanged":
        typer.echo(f"{family}: the champion (version {report['champion']}) already reads {service}")
        return
    typer.echo(readable(report))
    typer.echo(f"report: {', '.join(report['report_files'])}")
    if report["decision"] != "promote":
        raise typer.Exit(EXIT_REFUSED)


@app.command(name="retrain-if-drifted")
def retrain_if_drifted(
    family: Family,
    above: Annotated[float | None, typer.Option(help="Drifted share over which to retrain (default RETRAIN_DRIFT_ABOVE).")] = None,
    reports_dir: Annotated[Path | None, typer.Option(help="Default: DATA_DIR/reports/drift.")] = None,
    dry_run: DryRun = False,
    service_url: ServiceUrl = None,
) -> None:
    """Start a retraining cycle when the family's newest drift report has more drifted features than the line."""
    from rollout.retrain import RetrainSettings, drifted_share

    settings = get_settings()
    line = RetrainSettings().drift_above if above is None else above
    share = drifted_share(reports_dir or settings.data_dir / "reports" / "drift", family)
    if share is None or share <= line:
        typer.echo(json.dumps({"family": family, "retrain": False, "drift_share": share, "above": line}))
        return
    typer.echo(json.dumps({"family": family, "retrain": True, "drift_share": share, "above": line}))
    retrain(family, dry_run=dry_run, trigger="drift", service_url=service_url)


if __name__ == "__main__":
    app()
