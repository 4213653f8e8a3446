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
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from core import audit
from core.api_keys import client_headers
from core.families import NAMES as FAMILIES
from core.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_TAG,
    SHADOW_TAG,
    SHARE_TAG,
    RegistryUnavailable,
    champion_feature_service,
    fail_fast,
    mlflow_client,
    read_plan,
    unreachable,
)
from core.settings import Settings, get_settings
from rollout.settings import GateSettings, get_gate_settings

log = logging.getLogger(__name__)
EXIT_REFUSED, EXIT_ERROR, EXIT_NO_REGISTRY, EXIT_FAILED = 1, 2, 3, 4
app = typer.Typer(add_completion=False, no_args_is_help=True, help=(
    "Canary rollouts of model versions. Exit codes: 1 a gate refused the promotion; 2 the request or the "
    "registry's state does not allow the step; 3 the MLflow registry does not answer."))
PROMOTIONS_EXPERIMENT = "fintech-promotions"

Family = Annotated[str, typer.Argument(help="Model family: churn, fraud or segment.")]
ServiceUrl = Annotated[str | None, typer.Option(help="The running service (env PROMOTE_SERVICE_URL, default :3000).")]


class RolloutError(RuntimeError):
    """The registry is not in a state that allows the step asked for."""


def _client(settings: Settings):
    return mlflow_client(settings.tracking_uri)


def _check(family: str) -> None:
    if family not in FAMILIES:
        raise RolloutError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")


def identify(service_url: str, headers: dict[str, str]) -> tuple[str, bool, str]:
    """Who the service takes this CLI for, whether it could vouch for it, and how it authenticated. A credential it
    refuses is a RolloutError: nothing is changed on behalf of nobody."""
    import getpass

    import httpx

    try:
        response = httpx.get(f"{service_url}/admin/whoami", headers=headers, timeout=10)
    except httpx.HTTPError as e:
        log.warning("the service at %s cannot vouch for this CLI (%s): the audit log names the local user, unverified",
                    service_url, type(e).__name__)
        return f"unverified:{getpass.getuser()}", False, "none"
    if response.status_code in (401, 403, 429):
        raise RolloutError(f"the service at {service_url} refused this CLI's credential ({response.status_code}: {response.text[:200]}); "
                           "give it a key with the admin scope in FINTECH_API_KEY or FINTECH_API_KEY_FILE")
    if response.status_code != 200:
        return f"unverified:{getpass.getuser()}", False, "none"
    who = response.json()
    if who.get("auth_mode") == "off":
        return f"anonymous (AUTH_MODE=off):{getpass.getuser()}", False, "none"
    return who["client_id"], True, who["via"]


def record(settings: Settings, action: str, who: tuple[str, bool, str], family: str, details: dict) -> None:
    actor, verified, via = who
    audit.append(settings.audit_log, action=action, actor=actor, verified=verified, via=via, source="rollout",
                 family=family, details=details)


def ask_service_to_reload(service_url: str, reason: str, headers: dict[str, str]) -> dict | str:
    """The service's answer, or why there was none (it will follow the registry when it polls)."""
    import httpx

    try:
        response = httpx.post(f"{service_url}/admin/reload", timeout=120, headers=headers, json={"reason": reason})
        response.raise_for_status()
        return response.json()
    except httpx.HTTPError as e:
        return f"service not reloaded ({e!r}); it follows the registry when it next polls"


def start_canary(settings: Settings, family: str, version: str | None, share: float, shadow: bool) -> dict:
    _check(family)
    client = _client(settings)
    champion = str(client.get_model_version_by_alias(family, CHAMPION).version)
    if version is None:
        latest = max(int(v.version) for v in client.search_model_versions(f"name='{family}'"))
        version = str(latest)
    if version == champion:
        raise RolloutError(f"version {version} is already the {family} champion")
    client.get_model_version(family, version)  # raises when there is no such version
    # The alias last: a service polling between these writes sees no challenger, or this one with its
    # own share and shadow; never this version under the last canary's share.
    if CHALLENGER in client.get_registered_model(family).aliases:
        client.delete_registered_model_alias(family, CHALLENGER)
    client.set_registered_model_tag(family, SHARE_TAG, str(share))
    client.set_registered_model_tag(family, SHADOW_TAG, str(shadow).lower())
    client.set_registered_model_alias(family, CHALLENGER, version)
    log.info("%s: version %s is the challenger for %.1f%% of customers (shadow %s); champion %s",
             family, version, share, shadow, champion)
    return {"family": family, "champion": champion, "challenger": version, "share": share, "shadow": shadow}


def _end_canary(client, family: str) -> None:
    if CHALLENGER in client.get_registered_model(family).aliases:
        client.delete_registered_model_alias(family, CHALLENGER)
    client.set_registered_model_tag(family, SHARE_TAG, "0")
    client.set_registered_model_tag(family, SHADOW_TAG, "false")


def evaluate(settings: Settings, gates: GateSettings, family: str, metrics_text: str) -> dict:
    """The figures, the gates and the decision for the current canary (no registry change)."""
    from bentos.loading import from_registry
    from rollout.evaluation import compare, labelled_window
    from rollout.promotion import decide, judge, read_evidence

    _check(family)
    plan = read_plan(family, settings.tracking_uri)
    if plan.challenger is None:
        raise RolloutError(f"{family} has no challenger: start a canary first (make canary MODEL={family})")
    evidence = read_evidence(metrics_text, family, plan.champion, plan.challenger)
    cache = settings.data_dir / "model_cache"
    versions = {role: from_registry(family, v, settings.tracking_uri, cache)
                for role, v in ((CHAMPION, plan.champion), (CHALLENGER, plan.challenger))}
    window = labelled_window(family, settings, [v.metadata["feature_service"] for v in versions.values()])
    quality = None if window is None else compare(window, versions)
    checked = judge(evidence, quality, gates)
    promote, failed = decide(checked)
    return {
        "family": family, "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "champion": plan.champion, "challenger": plan.challenger, "share": plan.share, "shadow": plan.shadow,
        "evidence": {role: e.summary() for role, e in evidence.items()},
        "gates": [g.as_dict() for g in checked], "decision": "promote" if promote else "refuse", "failed_gates": failed,
    }


def readable(report: dict) -> str:
    lines = [f"# Promotion of {report['family']} version {report['challenger']} over version {report['champion']}", "",
             f"Decision: **{report['decision']}**" + (f" (failed: {', '.join(report['failed_gates'])})" if report["failed_gates"] else ""),
             (f"Before the first serve: {report['feature_services']['challenger']} against the champion's "
              f"{report['feature_services']['champion']}, no canary" if "feature_services" in report else
              f"Canary: {report['share']}% of customers, shadow {report['shadow']}") + f"; evaluated {report['time']}", "",
             "| gate | result | rule | figures |", "|---|---|---|---|"]
    for gate in report["gates"]:
        result = {True: "pass", False: "FAIL", None: "n/a"}[gate["passed"]]
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in gate["figures"].items())
        lines.append(f"| {gate['name']} | {result} | {gate['rule']} | {figures} |")
    lines += ["", "| role | version | predictions | failures | error rate | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    for role, e in report["evidence"].items():
        lines.append(f"| {role} | {e['version']} | {e['predictions']} | {e['failures']} | {_fmt(e['error_rate'])} | {_fmt(e['p99_ms'])} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(report: dict, reports_dir: Path, settings: Settings) -> tuple[Path, Path]:
    """JSON and Markdown under reports_dir, and the same logged to MLflow as a run."""
    import mlflow

    from training.registry import use_experiment  # XGBoost and pandas: only the commands that need them pay

    reports_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{report['family']}-v{report['challenger']}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    json_path, md_path = reports_dir / f"{stem}.json", reports_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    md_path.write_text(readable(report))
    use_experiment(PROMOTIONS_EXPERIMENT, settings.tracking_uri, settings.artifact_root)
    with mlflow.start_run(run_name=f"promote-{report['family']}-v{report['challenger']}"):
        mlflow.set_tags({"model": report["family"], "decision": report["decision"],
                         "failed_gates": ",".join(report["failed_gates"]) or "none"})
        mlflow.log_params({"champion": report["champion"], "challenger": report["challenger"], "share": report["share"]})
        for gate in report["gates"]:
            for name, value in gate["figures"].items():
                if isinstance(value, int | float):
                    mlflow.log_metric(f"{gate['name']}.{name}", float(value))
        mlflow.log_artifact(str(json_path))
        mlflow.log_artifact(str(md_path))
    return json_path, md_path


def promote(settings: Settings, gates: GateSettings, family: str, metrics_text: str) -> dict:
    """Judge the canary; only if every gate passes, move `champion` to the challenger."""
    report = evaluate(settings, gates, family, metrics_text)
    if report["decision"] == "promote":
        client = _client(settings)
        crown(client, family, report["challenger"], report["champion"])
        _end_canary(client, family)
        log.info("%s: version %s is the champion (was %s)", family, report["challenger"], report["champion"])
    report["report_files"] = [str(p) for p in write_report(report, promotion_reports(settings, gates), settings)]
    return report


def crown(client, family: str, version: str, previous: str) -> None:
    """`version` becomes the champion; the one it replaces is kept for a rollback."""
    client.set_registered_model_tag(family, PREVIOUS_TAG, previous)
    client.set_registered_model_alias(family, CHAMPION, version)


def promotion_reports(settings: Settings, gates: GateSettings) -> Path:
    return gates.reports_dir or settings.data_dir / "reports" / "promotions"


def rollback(settings: Settings, family: str) -> dict:
    """Give `champion` back to the version it had before the last promotion, and end any canary."""
    _check(family)
    client = _client(settings)
    model = client.get_registered_model(family)
    current = str(model.aliases[CHAMPION])
    previous = (model.tags or {}).get(PREVIOUS_TAG)
    if not previous and CHALLENGER not in model.aliases:
        raise RolloutError(f"{family}: no earlier champion and no canary to roll back")
    if previous:
        client.set_registered_model_alias(family, CHAMPION, previous)
        client.set_registered_model_tag(family, PREVIOUS_TAG, current)
    _end_canary(client, family)
    champion = previous or current
    log.info("%s: champion is version %s (was %s); no canary", family, champion, current)
    return {"family": family, "champion": champion, "was": current}


def fetch_metrics(service_url: str) -> str:
    import httpx

    try:
        response = httpx.get(f"{service_url}/metrics", timeout=30)
        response.raise_for_status()
    except httpx.HTTPError as e:
        raise RolloutError(f"cannot read the canary's evidence from {service_url}/metrics: {e!r}") from e
    return response.text


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
    """What the registry asks for, and what the service serves."""
    import httpx

    settings, gates = get_settings(), get_gate_settings()
    plan = _run(lambda: read_plan(family, settings.tracking_uri))
    typer.echo(json.dumps({"registry": plan.__dict__}))
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


def choose_features(settings: Settings, family: str, feature_service: str, margin: float) -> dict:
    """Before a family first serves (`make up`): train it on another FeatureService and make that
    version the champion if it beats the champion on the promotion's labelled out-of-time window by
    `margin`, the guard a retraining cycle applies. The gates that need the service's traffic
    cannot be judged before it serves, and say so in the report. Once a family serves, a new
    FeatureService goes through a canary instead (make train-candidate, make canary)."""
    from rollout.promotion import Gate, decide
    from rollout.retrain import guard_quality
    from training.pipeline import train_fraud_candidate

    _check(family)
    if family != "fraud":
        raise RolloutError(f"{family} has one FeatureService; only fraud has another to choose")
    client = _client(settings)
    plan = read_plan(family, settings.tracking_uri)
    if plan.challenger is not None:
        raise RolloutError(f"{family} has a canary of version {plan.challenger}: end it first (make rollback)")
    serving = champion_feature_service(client, family, feature_service)
    if serving == feature_service:
        return {"family": family, "decision": "unchanged", "champion": plan.champion, "feature_service": serving}
    candidate = train_fraud_candidate(settings, feature_service)["candidate"]["version"]
    quality = guard_quality(settings, family, plan.champion, candidate)
    gain = quality["challenger"] - quality["champion"]
    gates = [Gate("evidence", None, "no traffic yet: the family has not served", {}),
             Gate("quality", gain >= margin, f"challenger {quality['metric']} >= champion's + {margin}", quality)]
    promote, failed = decide(gates)
    if promote:
        crown(client, family, candidate, plan.champion)
    report = {"family": family, "time": datetime.now(UTC).isoformat(timespec="seconds"), "champion": plan.champion,
              "challenger": candidate, "share": 0.0, "shadow": False, "evidence": {},
              "feature_services": {"champion": serving, "challenger": feature_service},
              "gates": [g.as_dict() for g in gates], "decision": "promote" if promote else "refuse", "failed_gates": failed}
    report["report_files"] = [str(p) for p in write_report(report, promotion_reports(settings, get_gate_settings()), settings)]
    log.info("%s: version %s on %s %s (PR-AUC %.4f against %.4f)", family, candidate, feature_service,
             "is the champion" if promote else "stays a candidate", quality["challenger"], quality["champion"])
    return report


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
