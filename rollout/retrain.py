"""Continuous training: one retraining cycle of a family, from the newest labelled data to a new
champion, or to a refusal that leaves the champion serving.

    python -m rollout retrain churn [--dry-run] [--trigger schedule|drift|manual]     (make retrain MODEL=churn)

The stages, in order; each is written to the registered model's `serving.cycle` tag as it starts,
so `rollout status` and the service's /models/status show where a cycle is:

    locked      the family's cycle lock is taken (a tag in the registry, with an expiry)
    searching   Optuna, time-boxed (RETRAIN_BUDGET_MIN), each trial a nested MLflow run, scored on
                the validation part of the training data
    registered  the best parameters trained on the whole window; a new version, no alias yet
    guard       the candidate against the champion on the same out-of-time window (the promotion's
                labelled window): it must beat it by RETRAIN_MARGIN or the cycle stops, refused,
                before any traffic
    canary      the candidate is the challenger for RETRAIN_SHARE% of customers, in shadow for the rest
    evidence    the service's /metrics polled until the challenger has the predictions the gates need
    gates       the promotion gates (rollout/promotion.py): promoted, or the canary ended

and an outcome: promoted, refused, dry_run (everything but the aliases) or failed. A cycle that
fails or is stopped (SIGTERM, Ctrl-C) after the canary started ends the canary: the champion
keeps serving and the challenger alias is removed. One killed outright (SIGKILL) cannot: the next
cycle finds its lock expired and its stage not final, and ends its canary before it starts.
The counters of cycles started, promoted, refused and failed, and of failures in a row, are tags
too (`serving.cycles_*`); the service exports them (fintech_retrain_*).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.families import FAMILIES
from core.feature_sets import FEATURE_SERVICES, SERVICE_FEATURES
from core.registry import CHALLENGER, CHAMPION, CYCLE_COUNTERS, CYCLE_TAG, LOCK_TAG, champion_feature_service, mlflow_client
from core.settings import Settings
from rollout import steps

if TYPE_CHECKING:
    from training.models import Supervised

log = logging.getLogger(__name__)
EXPERIMENT = "fintech-retrain"
FINAL = ("promoted", "refused", "dry_run", "failed")
SUPERVISED_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.label)  # what a cycle can judge


class RetrainSettings(BaseSettings):
    """How a retraining cycle searches, guards and rolls out (environment, prefix RETRAIN_)."""

    model_config = SettingsConfigDict(env_prefix="RETRAIN_", extra="ignore")

    budget_min: float = Field(5.0, gt=0, description="Minutes the hyperparameter search may take.")
    max_trials: int = Field(50, ge=1, description="At most this many trials, even within the budget.")
    window_days: int = Field(365, ge=30, description="Train on the labelled rows of the last this many days.")
    margin: float = Field(0.002, ge=0, description=(
        "The candidate's PR-AUC on the out-of-time window must exceed the champion's by at least this."))
    share: float = Field(10.0, gt=0, le=100, description="Percent of customers the candidate answers in its canary.")
    evidence_timeout_min: float = Field(60.0, gt=0, description="How long to wait for the gates' evidence before giving up.")
    poll_s: float = Field(15.0, gt=0, description="How often the service's /metrics is read while waiting.")
    lock_timeout_min: float = Field(240.0, gt=0, description=(
        "A cycle's lock expires this long after its last stage: a killed cycle does not block the family for ever."))
    drift_above: float = Field(0.3, ge=0, le=1, description="A drift report whose drifted share is above this starts a cycle.")


class CycleLocked(RuntimeError):
    """Another cycle of the family holds the lock."""


class CycleStopped(RuntimeError):
    """The process was asked to stop (SIGTERM)."""


@dataclass
class Cycle:
    """One cycle's record, written to the registry at each stage."""

    family: str
    trigger: str
    dry_run: bool
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: str = field(default_factory=lambda: _now())
    stage: str = "locked"
    outcome: str | None = None
    reason: str = ""
    champion: str | None = None
    candidate: str | None = None
    canary_started: bool = False
    stages: list[dict] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "stages"} | {"stages": self.stages[-12:]}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the lock and the record, in the registry -----------------------------------------------------

def read_lock(client, family: str) -> tuple[str, float] | None:
    """(owner cycle id, expiry as epoch seconds) of the family's lock, or None."""
    value = (client.get_registered_model(family).tags or {}).get(LOCK_TAG, "")
    if not value:
        return None
    owner, _, expires = value.partition(" ")
    return owner, float(expires or 0)


def acquire(client, family: str, cycle_id: str, timeout_s: float, settle_s: float = 1.0) -> dict | None:
    """Take the family's lock, or raise CycleLocked. The registry has no compare-and-set: the lock
    is written, then read back after `settle_s`; of two cycles that wrote at once, the one whose
    write is not the one read back stands down. Returns the record of a dead cycle whose expired
    lock this one took over (to clean up after), or None."""
    held = read_lock(client, family)
    if held and held[0] != cycle_id and held[1] > time.time():
        record = read_record(client, family) or {}
        raise CycleLocked(f"{family}: cycle {held[0]} holds the lock (stage {record.get('stage', '?')}, until "
                          f"{datetime.fromtimestamp(held[1], UTC):%Y-%m-%d %H:%M} UTC)")
    client.set_registered_model_tag(family, LOCK_TAG, f"{cycle_id} {time.time() + timeout_s:.0f}")
    time.sleep(settle_s)
    now_held = read_lock(client, family)
    if not now_held or now_held[0] != cycle_id:
        raise CycleLocked(f"{family}: another cycle took the lock at the same moment ({now_held[0] if now_held else 'none'})")
    dead = read_record(client, family) if held and held[0] != cycle_id else None
    return dead if dead and dead.get("outcome") is None else None


def refresh(client, family: str, cycle_id: str, timeout_s: float) -> None:
    client.set_registered_model_tag(family, LOCK_TAG, f"{cycle_id} {time.time() + timeout_s:.0f}")


def release(client, family: str, cycle_id: str) -> None:
    held = read_lock(client, family)
    if held and held[0] == cycle_id:
        client.delete_registered_model_tag(family, LOCK_TAG)


def read_record(client, family: str) -> dict | None:
    value = (client.get_registered_model(family).tags or {}).get(CYCLE_TAG)
    return json.loads(value) if value else None


def write_record(client, cycle: Cycle) -> None:
    # MLflow caps a tag's value (5,000 characters in the SQL stores): the record stays well under
    client.set_registered_model_tag(cycle.family, CYCLE_TAG, json.dumps(cycle.as_dict(), default=str)[:4900])


def count(client, family: str, outcome: str) -> None:
    """The counters the service exports: cycles started and by outcome, and failures in a row."""
    tags = client.get_registered_model(family).tags or {}
    name = CYCLE_COUNTERS[outcome]
    client.set_registered_model_tag(family, name, str(int(tags.get(name, "0")) + 1))
    if outcome in ("promoted", "refused", "dry_run"):
        client.set_registered_model_tag(family, CYCLE_COUNTERS["failed_in_a_row"], "0")
    elif outcome == "failed":
        in_a_row = CYCLE_COUNTERS["failed_in_a_row"]
        client.set_registered_model_tag(family, in_a_row, str(int(tags.get(in_a_row, "0")) + 1))


# --- the stages -------------------------------------------------------------------------------------

def training_window(frame: pd.DataFrame, days: int) -> pd.DataFrame:
    """The labelled rows of the last `days` days of the training set."""
    times = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame[times >= times.max() - pd.Timedelta(days=days)].reset_index(drop=True)


def search(how: Supervised, frame: pd.DataFrame, features: list[str], budget_s: float, max_trials: int, seed: int,
           on_trial: Callable[[int, dict, float], None]) -> tuple[dict, float, int]:
    """Optuna's TPE over training.models.SEARCHED, at most budget_s or max_trials; the defaults are
    the first trial, so the best is never worse than them. Returns (params, validation PR-AUC, trials)."""
    import optuna

    from training.models import validation_pr_auc

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = {
            "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
            "max_depth": trial.suggest_int("max_depth", 3, 7),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "min_child_weight": trial.suggest_int("min_child_weight", 1, 20),
            "subsample": trial.suggest_float("subsample", 0.6, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        }
        value = validation_pr_auc(how, frame, features, params, seed)
        on_trial(trial.number, params, value)
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({"n_estimators": 300, "max_depth": 4, "learning_rate": 0.05, "min_child_weight": 5,
                         "subsample": 0.8, "colsample_bytree": 0.8})
    study.optimize(objective, n_trials=max_trials, timeout=budget_s, catch=())
    return study.best_params, float(study.best_value), len(study.trials)


def wait_for_evidence(family: str, champion: str, challenger: str, needed: int, fetch: Callable[[], str],
                      timeout_s: float, poll_s: float, on_poll: Callable[[int], None]) -> int:
    """Poll the service's metrics until the challenger has `needed` predictions; how many it has.
    Raises TimeoutError when it has not got them within timeout_s."""
    from rollout.promotion import read_evidence

    deadline = time.monotonic() + timeout_s
    while True:
        got = read_evidence(fetch(), family, champion, challenger)[CHALLENGER].predictions
        on_poll(got)
        if got >= needed:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"the challenger has {got} of the {needed} predictions the gates need after "
                               f"{timeout_s / 60:.0f} min")
        time.sleep(poll_s)


@dataclass
class Service:
    """What a cycle asks of the running service (rollout/cli.py gives the real calls)."""

    metrics: Callable[[], str]
    reload: Callable[[str], object]


def run_cycle(settings: Settings, retrain: RetrainSettings, gates, family: str, service: Service, trigger: str = "manual",
              dry_run: bool = False, prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> dict:
    """One cycle, start to outcome; the cycle's record. `prepare` changes the training window
    before the search (the tests shuffle labels with it)."""
    import mlflow

    from training import pipeline, registry, store

    steps.check_family(family)  # an unknown family is named as such
    if family not in SUPERVISED_FAMILIES:
        raise steps.RolloutError(f"{family} has no labels to train against or to judge a candidate on: retrain it with "
                               f"`make train` and roll it out with `make canary MODEL={family}`")
    client = mlflow_client(settings.tracking_uri)
    cycle = Cycle(family, trigger, dry_run)
    timeout_s = retrain.lock_timeout_min * 60
    dead = acquire(client, family, cycle.id, timeout_s)
    try:
        if dead:
            recover(client, family, dead)
        count(client, family, "started")
        registry.use_experiment(EXPERIMENT, settings.tracking_uri, settings.artifact_root)
        parent = client.create_run(mlflow.get_experiment_by_name(EXPERIMENT).experiment_id, run_name=f"retrain-{family}",
                                   tags={"model": family, "trigger": trigger, "dry_run": str(dry_run).lower(), "cycle": cycle.id})
    except BaseException:
        release(client, family, cycle.id)
        raise
    cycle.figures["mlflow_run"] = parent.info.run_id

    def stage(name: str, **details) -> None:
        cycle.stage = name
        cycle.stages.append({"stage": name, "at": _now(), **details})
        write_record(client, cycle)
        refresh(client, family, cycle.id, timeout_s)
        log.info("%s cycle %s: %s %s", family, cycle.id, name, json.dumps(details, default=str) if details else "")

    def stop(signum, _frame):
        raise CycleStopped(f"stopped by signal {signum}")

    in_main = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    previous = signal.signal(signal.SIGTERM, stop) if in_main else None
    try:
        stage("locked", trigger=trigger, dry_run=dry_run)
        cycle.champion = str(client.get_model_version_by_alias(family, CHAMPION).version)
        # the champion's FeatureService (fraud_v1 or fraud_v2), not the family table's: a cycle must
        # not undo a promotion to the better features
        feature_service = champion_feature_service(client, family, FEATURE_SERVICES[family])
        # a FeatureService only the tests define trains on the family's first one's features
        features = SERVICE_FEATURES.get(feature_service) or SERVICE_FEATURES[FAMILIES[family].feature_service]
        trainer = pipeline.TRAINERS[family]
        feature_store = store.open_store(settings)
        frame = trainer.training_set(feature_store, settings, feature_service)
        frame = training_window(frame, retrain.window_days)
        if prepare is not None:
            frame = prepare(frame)

        stage("searching", rows=len(frame), budget_min=retrain.budget_min, feature_service=feature_service)

        def trial_run(number: int, params: dict, value: float) -> None:
            run = client.create_run(parent.info.experiment_id, run_name=f"trial-{number}",
                                    tags={"mlflow.parentRunId": parent.info.run_id, "model": family})
            for name, value_ in params.items():
                client.log_param(run.info.run_id, name, value_)
            client.log_metric(run.info.run_id, "valid_pr_auc", value)
            client.set_terminated(run.info.run_id)

        params, best, trials = search(trainer.supervised, frame, features, retrain.budget_min * 60, retrain.max_trials,
                                      settings.seed, trial_run)
        cycle.figures.update(search_trials=trials, search_valid_pr_auc=best, params=params)

        trained = trainer.fit(frame, settings, params, features)
        # with what train_all stores with every version, so drift reports can judge this one too
        registered = pipeline.register_version(feature_store, settings, trained, frame, feature_service)
        client.set_tag(registered.run_id, "mlflow.parentRunId", parent.info.run_id)
        cycle.candidate = registered.version
        stage("registered", version=registered.version, test_pr_auc=trained.metrics["test_pr_auc"])

        quality = steps.guard_quality(settings, family, cycle.champion, registered.version)
        cycle.figures["guard"] = quality
        gain = quality["challenger"] - quality["champion"]
        stage("guard", champion_pr_auc=quality["champion"], candidate_pr_auc=quality["challenger"], gain=gain)
        if gain < retrain.margin:
            return finish(client, cycle, "refused", f"the candidate's PR-AUC on {quality['window']} is {quality['challenger']:.4f}, "
                          f"the champion's {quality['champion']:.4f}: it must be higher by {retrain.margin}", parent)
        if dry_run:
            return finish(client, cycle, "dry_run", f"would start a canary of version {registered.version} at "
                          f"{retrain.share:g}% (dry run: no alias moved)", parent)

        stage("canary", share=retrain.share, shadow=True)
        steps.start_canary(settings, family, registered.version, retrain.share, True)
        cycle.canary_started = True
        answer = service.reload(f"retrain {family} {cycle.id}: canary of {registered.version}")
        if why := refused_by_service(answer, family, registered.version):  # no evidence will come: do not wait for it
            end_canary(client, family, cycle)
            service.reload(f"retrain {family} {cycle.id}: the service refused {registered.version}")
            return finish(client, cycle, "refused", f"the service refused version {registered.version}: {why}", parent)

        stage("evidence", needed=gates.min_predictions)
        got = wait_for_evidence(family, cycle.champion, registered.version, gates.min_predictions, service.metrics,
                                retrain.evidence_timeout_min * 60, retrain.poll_s,
                                lambda n: refresh(client, family, cycle.id, timeout_s))
        stage("gates", challenger_predictions=got)
        report = steps.promote(settings, gates, family, service.metrics())
        cycle.figures["promotion_report"] = report["report_files"]
        if report["decision"] == "promote":
            cycle.canary_started = False  # the canary is over: it won
            service.reload(f"retrain {family} {cycle.id}: promoted {registered.version}")
            return finish(client, cycle, "promoted", f"version {registered.version} passed every gate", parent)
        end_canary(client, family, cycle)
        service.reload(f"retrain {family} {cycle.id}: refused {registered.version}")
        return finish(client, cycle, "refused", f"the gates refused version {registered.version}: "
                      f"{', '.join(report['failed_gates'])}", parent)
    except BaseException as e:  # SIGTERM and Ctrl-C too: the canary ends, the champion serves
        failure = stopped_within(e) or e
        try:
            had_canary = cycle.canary_started
            end_canary(client, family, cycle)
            if had_canary:
                service.reload(f"retrain {family} {cycle.id}: failed, canary ended")
            finish(client, cycle, "failed", f"{type(failure).__name__}: {failure}", parent)
        except Exception:  # the registry too: the next cycle finds this one's lock expired and cleans up
            log.exception("%s cycle %s: could not record its failure", family, cycle.id)
        if failure is not e:
            raise failure from e
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        release(client, family, cycle.id)


def stopped_within(error: BaseException) -> CycleStopped | None:
    """The signal's CycleStopped behind `error`: raised inside an MLflow call (the lock's refresh
    while the cycle waits for evidence), it comes out wrapped in an MlflowException."""
    while error is not None:
        if isinstance(error, CycleStopped):
            return error
        error = error.__cause__ or error.__context__
    return None


def refused_by_service(answer, family: str, version: str) -> str | None:
    """Why the service's answer to a reload says it will not serve `version` (its load checks:
    bentos/family.py `checked_scorer`), or None. An answer that is a string did not reach the service."""
    if not isinstance(answer, dict):
        return None
    return (answer.get(family) or {}).get("refused", {}).get(str(version))


def end_canary(client, family: str, cycle: Cycle) -> None:
    """Remove the challenger alias if this cycle set it (the champion never moved)."""
    if not cycle.canary_started:
        return
    model = client.get_registered_model(family)
    if str(model.aliases.get(CHALLENGER)) == str(cycle.candidate):
        steps.end_canary(client, family)
        log.info("%s cycle %s: canary of %s ended; champion %s serves", family, cycle.id, cycle.candidate, cycle.champion)
    cycle.canary_started = False


def recover(client, family: str, dead: dict) -> None:
    """A cycle died without its outcome (killed outright): end its canary, count it failed."""
    stale = Cycle(family, dead.get("trigger", "?"), bool(dead.get("dry_run")), id=dead.get("id", "?"),
                  started=dead.get("started", ""), stage=dead.get("stage", "?"), candidate=dead.get("candidate"),
                  champion=dead.get("champion"), canary_started=bool(dead.get("canary_started")))
    end_canary(client, family, stale)
    stale.outcome, stale.reason = "failed", f"died at stage {stale.stage}: found by the next cycle, its canary ended"
    write_record(client, stale)
    count(client, family, "failed")
    log.warning("%s: cycle %s %s", family, stale.id, stale.reason)


def finish(client, cycle: Cycle, outcome: str, reason: str, parent) -> dict:
    cycle.outcome, cycle.reason = outcome, reason
    cycle.stages.append({"stage": outcome, "at": _now()})
    write_record(client, cycle)
    count(client, cycle.family, outcome)
    run_id = parent.info.run_id
    client.set_tag(run_id, "outcome", outcome)
    client.set_tag(run_id, "reason", reason[:500])
    for name, value in cycle.figures.items():
        if isinstance(value, int | float):
            client.log_metric(run_id, name, float(value))
    client.log_dict(run_id, cycle.as_dict() | {"stages": cycle.stages}, "cycle.json")
    client.set_terminated(run_id, "FINISHED" if outcome != "failed" else "FAILED")
    log.info("%s cycle %s: %s: %s", cycle.family, cycle.id, outcome, reason)
    return cycle.as_dict() | {"stages": cycle.stages}


def drifted_share(reports_dir: Path, family: str) -> float | None:
    """The drifted share of the family's newest drift report, or None when there is none."""
    from core.reports import latest_summary

    summary = latest_summary(reports_dir, family)
    return None if summary is None else float(summary["drift_share"])

