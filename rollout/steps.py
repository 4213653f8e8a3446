"""The rollout's steps as a library: start a canary, judge it (evidence from the service's metrics,
quality on a labelled out-of-time window, the gates), promote, roll back, and choose a family's
FeatureService before it first serves. The CLI (rollout/cli.py) and the retraining cycle
(rollout/retrain.py) both call these; neither imports the other's internals.

    start_canary(settings, "churn", "4", share=10, shadow=True)
    report = promote(settings, gates, "churn", fetch_metrics(url))   # report["decision"]: promote or refuse

Every change is made in the MLflow registry (aliases and the registered model's serving.* tags);
the caller asks the running service to follow it (ask_service_to_reload).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from core import audit
from core.families import FAMILIES
from core.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_TAG,
    SHADOW_TAG,
    SHARE_TAG,
    champion_feature_service,
    mlflow_client,
    read_plan,
)
from core.settings import Settings
from rollout.promotion import figure, flips_text
from rollout.settings import GateSettings, get_gate_settings

log = logging.getLogger(__name__)
PROMOTIONS_EXPERIMENT = "fintech-promotions"


class RolloutError(RuntimeError):
    """The registry is not in a state that allows the step asked for."""


def check_family(family: str) -> None:
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
    check_family(family)
    client = mlflow_client(settings.tracking_uri)
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


def end_canary(client, family: str) -> None:
    """No challenger, no share, no shadow: the champion answers everyone."""
    if CHALLENGER in client.get_registered_model(family).aliases:
        client.delete_registered_model_alias(family, CHALLENGER)
    client.set_registered_model_tag(family, SHARE_TAG, "0")
    client.set_registered_model_tag(family, SHADOW_TAG, "false")


def evaluate(settings: Settings, gates: GateSettings, family: str, metrics_text: str) -> dict:
    """The figures, the gates and the decision for the current canary (no registry change)."""
    from rollout.flips import decision_flips
    from rollout.promotion import decide, judge, read_evidence

    check_family(family)
    plan = read_plan(family, settings.tracking_uri)
    if plan.challenger is None:
        raise RolloutError(f"{family} has no challenger: start a canary first (make canary MODEL={family})")
    evidence = read_evidence(metrics_text, family, plan.champion, plan.challenger)
    quality = guard_quality(settings, family, plan.champion, plan.challenger)
    flips = decision_flips(settings, family, plan.champion, plan.challenger)
    checked = judge(evidence, quality, gates, flips)
    promote, failed = decide(checked)
    return {
        "family": family, "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "champion": plan.champion, "challenger": plan.challenger, "share": plan.share, "shadow": plan.shadow,
        "evidence": {role: e.summary() for role, e in evidence.items()}, "flips": flips,
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
        figures = ", ".join(f"{k}={figure(v)}" for k, v in gate["figures"].items())
        lines.append(f"| {gate['name']} | {result} | {gate['rule']} | {figures} |")
    lines += ["", "| role | version | predictions | failures | error rate | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    for role, e in report["evidence"].items():
        lines.append(f"| {role} | {e['version']} | {e['predictions']} | {e['failures']} | {figure(e['error_rate'])} | {figure(e['p99_ms'])} |")
    if flips := report.get("flips"):
        lines += ["", flips_text(flips)]
    return "\n".join(lines) + "\n"


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
        client = mlflow_client(settings.tracking_uri)
        crown(client, family, report["challenger"], report["champion"])
        end_canary(client, family)
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
    check_family(family)
    client = mlflow_client(settings.tracking_uri)
    model = client.get_registered_model(family)
    current = str(model.aliases[CHAMPION])
    previous = (model.tags or {}).get(PREVIOUS_TAG)
    if not previous and CHALLENGER not in model.aliases:
        raise RolloutError(f"{family}: no earlier champion and no canary to roll back")
    if previous:
        client.set_registered_model_alias(family, CHAMPION, previous)
        client.set_registered_model_tag(family, PREVIOUS_TAG, current)
    end_canary(client, family)
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


def guard_quality(settings: Settings, family: str, champion: str, candidate: str) -> dict | None:
    """Both versions, as the registry holds them, on the promotion's labelled out-of-time window
    (None for a family without labels)."""
    from rollout.evaluation import compare, labelled_window
    from scoring.loading import from_registry

    cache = settings.data_dir / "model_cache"
    versions = {role: from_registry(family, version, settings.tracking_uri, cache)
                for role, version in ((CHAMPION, champion), (CHALLENGER, candidate))}
    window = labelled_window(family, settings, [v.metadata["feature_service"] for v in versions.values()])
    return None if window is None else compare(window, versions)


def choose_features(settings: Settings, family: str, feature_service: str, margin: float) -> dict:
    """Before a family first serves (`make up`): train it on another FeatureService and make that
    version the champion if it beats the champion on the promotion's labelled out-of-time window by
    `margin`, the guard a retraining cycle applies. The gates that need the service's traffic
    cannot be judged before it serves, and say so in the report. Once a family serves, a new
    FeatureService goes through a canary instead (make train-candidate, make canary)."""
    from rollout.promotion import Gate, decide
    from training.pipeline import train_candidate

    check_family(family)
    if not FAMILIES[family].alternatives:
        raise RolloutError(f"{family} has one FeatureService ({FAMILIES[family].feature_service}): there is no other to choose")
    if feature_service not in FAMILIES[family].feature_services:
        raise RolloutError(f"{feature_service} is not one of {family}'s FeatureServices: "
                           f"{', '.join(FAMILIES[family].feature_services)}")
    client = mlflow_client(settings.tracking_uri)
    plan = read_plan(family, settings.tracking_uri)
    if plan.challenger is not None:
        raise RolloutError(f"{family} has a canary of version {plan.challenger}: end it first (make rollback)")
    serving = champion_feature_service(client, family, feature_service)
    if serving == feature_service:
        return {"family": family, "decision": "unchanged", "champion": plan.champion, "feature_service": serving}
    candidate = train_candidate(settings, family, feature_service)["candidate"]["version"]
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
