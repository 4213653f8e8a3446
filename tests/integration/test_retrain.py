"""Retraining cycles (rollout/retrain.py) on the real feature store and MLflow registry of the small
test data, copied so that the versions and aliases they make are theirs alone, and for the online
stages a real `bentoml serve` (authentication on) under continuous load."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from core import audit
from core.api_keys import client_headers, ensure_local_key
from core.registry import CHALLENGER, CHAMPION, LOCK_TAG, mlflow_client, read_plan
from loadtests.servers import ROOT, stop
from rollout import retrain
from rollout.retrain import EXPERIMENT, RetrainSettings, Service, read_record, run_cycle
from rollout.settings import GateSettings
from rollout.steps import ask_service_to_reload, fetch_metrics
from tests.integration.conftest import (
    LoadClient,
    apply_unmaterialized_churn_service,
    latest_rows,
    own_copy,
    start_server,
    wait_for,
)
from training import models, pipeline, registry, store

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("tracking_uri_kept")]
# a short search: what is tested is the cycle, not how good a search gets
QUICK = RetrainSettings(budget_min=0.5, max_trials=2, poll_s=1, evidence_timeout_min=3)
# the load client shares the two cores with the server: the latency gate gets room, as in test_rollout
GATES = GateSettings(min_predictions=300, max_p99_ratio=3.0)
# A champion trained on a sixth of the customers scores very differently from one trained on all of
# them (PSI 0.71 measured): the score-shift gate, which looks for a surprise, refuses the better
# model at its default 0.2. The promotion of a model that much better is what this test is about.
BETTER_GATES = GateSettings(min_predictions=300, max_p99_ratio=3.0, max_score_psi=1.0)


@pytest.fixture(scope="module")
def own(settings, built, tmp_path_factory):
    return own_copy(settings, tmp_path_factory, "retrain")


def no_service() -> Service:
    def refuse(*_):
        raise AssertionError("the cycle reached the service")
    return Service(metrics=refuse, reload=refuse)


def shuffled(frame):
    return frame.assign(churned=np.random.default_rng(0).permutation(frame["churned"].to_numpy()))


def test_a_worse_candidate_is_refused_before_any_traffic_and_the_champion_is_unchanged(own):
    client = mlflow_client(own.tracking_uri)
    before = read_plan("churn", own.tracking_uri)
    cycle = run_cycle(own, QUICK, GATES, "churn", no_service(), trigger="manual", prepare=shuffled)
    assert cycle["outcome"] == "refused" and cycle["stage"] == "guard", cycle
    assert "must be higher" in cycle["reason"] and cycle["figures"]["guard"]["challenger"] < cycle["figures"]["guard"]["champion"]
    after = read_plan("churn", own.tracking_uri)
    assert (after.champion, after.challenger) == (before.champion, None)
    assert client.get_model_version("churn", cycle["candidate"]).aliases == []  # registered, never given traffic
    assert LOCK_TAG not in client.get_registered_model("churn").tags
    assert after.cycle["outcome"] == "refused" and after.cycle_counts["refused"] >= 1
    # the cycle is one MLflow run with each trial and the candidate's training run nested in it
    mlflow.set_tracking_uri(own.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT, "fintech-models"])
    parent = runs[runs["tags.cycle"] == cycle["id"]]
    assert parent["tags.outcome"].tolist() == ["refused"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert len(children) == cycle["figures"]["search_trials"] + 1


@pytest.fixture(scope="module")
def weak_champion(own):
    """A churn champion trained on a sixth of the customers: a cycle on all of them should beat it."""
    frame = pipeline.churn_training_set(store.open_store(own), own)
    few = frame[frame["customer_id"].isin(frame["customer_id"].drop_duplicates().sample(frac=1 / 6, random_state=1))]
    version = registry.log_and_register(models.train_churn(few, own.seed), few, "churn_v1", own.tracking_uri,
                                        own.artifact_root).version
    mlflow_client(own.tracking_uri).set_registered_model_alias("churn", CHAMPION, version)
    return version


@pytest.fixture(scope="module")
def server(own, weak_champion, served_models, tmp_path_factory):
    ensure_local_key(own.secrets_dir)
    process, url = start_server(own, tmp_path_factory.mktemp("serve"), AUTH_MODE="on", SERVING_REGISTRY_POLL_S="2",
                                AUTH_RATE_LIMITS=json.dumps({"local": {"inference": {"per_s": 1e6, "burst": 10**6}}}),
                                MLFLOW_TRACKING_URI=own.tracking_uri)
    served = httpx.get(f"{url}/models/status", headers=client_headers(own.secrets_dir), timeout=10).json()["churn"]["versions"]
    assert [v["version"] for v in served] == [weak_champion]  # it follows the registry from its start
    yield url
    stop(process)


def test_a_better_candidate_goes_all_the_way_to_champion_without_a_failed_request(own, server, weak_champion, table):
    headers = client_headers(own.secrets_dir)
    service = Service(metrics=lambda: fetch_metrics(server), reload=lambda reason: ask_service_to_reload(server, reason, headers))
    customers = latest_rows(table, 500).index.tolist()
    with LoadClient(server, customers, threads=4, headers=headers) as load:
        cycle = run_cycle(own, QUICK, BETTER_GATES, "churn", service, trigger="schedule")
    assert cycle["outcome"] == "promoted", (cycle["reason"], cycle["stages"], cycle["figures"].get("guard"))
    assert [s["stage"] for s in cycle["stages"]] == ["locked", "searching", "registered", "guard", "canary", "evidence", "gates",
                                                     "promoted"]
    assert cycle["figures"]["guard"]["challenger"] >= cycle["figures"]["guard"]["champion"] + QUICK.margin
    plan = read_plan("churn", own.tracking_uri)
    assert (plan.champion, plan.challenger) == (cycle["candidate"], None)
    assert load.failures == [] and len(load.answers) > 300
    assert {a[2] for a in load.answers} >= {weak_champion, cycle["candidate"]}  # both answered, no request failed
    report = json.loads(Path(cycle["figures"]["promotion_report"][0]).read_text())
    assert report["decision"] == "promote"
    # the service shows the cycle's outcome from the registry at its next poll
    status = lambda: httpx.get(f"{server}/models/status", headers=headers, timeout=10).json()["churn"]["retrain_cycle"]  # noqa: E731
    wait_for(lambda: (status() or {}).get("outcome") == "promoted", "the cycle's outcome in /models/status", timeout_s=30)
    assert status()["id"] == cycle["id"] and status()["candidate"] == cycle["candidate"]


def retrain_cli(settings, url: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rollout", "retrain", "churn", "--service-url", url, *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "DATA_DIR": str(settings.data_dir), "MLFLOW_TRACKING_URI": settings.tracking_uri,
                                 "RETRAIN_BUDGET_MIN": "0.2", "RETRAIN_MAX_TRIALS": "1", "RETRAIN_POLL_S": "1",
                                 "PYTHONOPTIMIZE": "1", **env})  # PYTHONOPTIMIZE: as the jobs image runs it


def serve_champion(settings, url: str, version: str) -> None:
    """Make `version` the champion again, and wait until the service (polling every 2 s) serves it alone."""
    mlflow_client(settings.tracking_uri).set_registered_model_alias("churn", CHAMPION, version)
    served = lambda: [v["version"] for v in httpx.get(f"{url}/models/status", headers=client_headers(settings.secrets_dir),  # noqa: E731
                                                      timeout=10).json()["churn"]["versions"]]
    wait_for(lambda: served() == [version], f"version {version} served alone", timeout_s=30)


def badly_calibrated(train):
    """train_churn as it would be with a Platt fit gone wrong: the booster ranks as well as ever
    (the guard's PR-AUC sees the booster alone), but every calibrated probability is NaN."""
    def trained(*args, **kwargs):
        model = train(*args, **kwargs)
        model.metadata["calibration"] = {"method": "platt", "a": float("nan"), "b": float("nan")}
        return model
    return trained


def test_a_candidate_that_passes_offline_but_the_service_cannot_serve_is_rolled_back_at_once(own, server, weak_champion, table,
                                                                                             monkeypatch):
    serve_champion(own, server, weak_champion)
    monkeypatch.setattr(models, "train_churn", badly_calibrated(models.train_churn))
    headers = client_headers(own.secrets_dir)
    service = Service(metrics=lambda: fetch_metrics(server), reload=lambda reason: ask_service_to_reload(server, reason, headers))
    with LoadClient(server, latest_rows(table, 200).index.tolist(), threads=2, headers=headers) as load:
        cycle = run_cycle(own, RetrainSettings(budget_min=0.2, max_trials=1, poll_s=1, evidence_timeout_min=3), GATES, "churn",
                          service)
    assert [s["stage"] for s in cycle["stages"]][-4:] == ["registered", "guard", "canary", "refused"], cycle["stages"]
    assert cycle["outcome"] == "refused" and f"the service refused version {cycle['candidate']}" in cycle["reason"]
    assert "scores [nan" in cycle["reason"]  # the service's own load check, in its words
    plan = read_plan("churn", own.tracking_uri)
    assert (plan.champion, plan.challenger) == (weak_champion, None)
    assert load.failures == [] and {a[2] for a in load.answers} == {weak_champion}


@pytest.mark.parametrize("its_view", ["never materialized", "without a table"])
def test_a_candidate_that_passes_offline_but_fails_online_is_rolled_back_by_the_gates(own, server, weak_champion, table,
                                                                                      monkeypatch, its_view):
    """The candidate reads a FeatureService over a view of its own: training and the guard read the
    offline store, and the service's load checks pass (it serves the features). Online, a view
    never materialized knows no customer, and one whose SQLite table is missing (a registry
    applied elsewhere than the store it names) fails every read. Either way the champion answers
    those customers, and the gates, comparing the two versions' unknown-customer and error rates,
    end the canary."""
    serve_champion(own, server, weak_champion)
    feature_store = store.open_store(own)
    service_name = apply_unmaterialized_churn_service(feature_store, "churn_next" if its_view == "never materialized" else "churn_lost")
    if its_view == "without a table":
        with sqlite3.connect(feature_store.config.online_store.path) as db:
            db.execute(f"DROP TABLE fintech_{service_name}_features")
    # the champion's FeatureService is what a cycle trains on: here, that one
    monkeypatch.setattr(retrain, "champion_feature_service", lambda client, family, default: service_name)
    headers = client_headers(own.secrets_dir)
    service = Service(metrics=lambda: fetch_metrics(server), reload=lambda reason: ask_service_to_reload(server, reason, headers))
    with LoadClient(server, latest_rows(table, 200).index.tolist(), threads=2, headers=headers) as load:
        cycle = run_cycle(own, RetrainSettings(budget_min=0.2, max_trials=1, poll_s=1, evidence_timeout_min=3), GATES, "churn",
                          service)
    assert [s["stage"] for s in cycle["stages"]][-5:] == ["guard", "canary", "evidence", "gates", "refused"], cycle["stages"]
    gate_name = "unknown_customers" if its_view == "never materialized" else "error_rate"
    assert cycle["outcome"] == "refused" and gate_name in cycle["reason"], cycle["reason"]
    report = json.loads(Path(cycle["figures"]["promotion_report"][0]).read_text())
    gate = next(g for g in report["gates"] if g["name"] == gate_name)
    assert gate["passed"] is False and gate["figures"]["challenger"] == 1.0 and gate["figures"]["champion"] == 0.0
    plan = read_plan("churn", own.tracking_uri)
    assert (plan.champion, plan.challenger) == (weak_champion, None)
    assert load.failures == [] and {a[2] for a in load.answers} == {weak_champion}  # no caller met the candidate


def started_canary(client, process: subprocess.Popen, not_of: str | None = None):
    """A condition for wait_for: the CLI's cycle (not cycle `not_of`) waits for evidence."""
    def waiting_for_evidence() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the cycle ended before its canary (exit {process.returncode}): {process.stdout.read()[-2000:]}")
        record = read_record(client, "churn") or {}
        return record.get("stage") == "evidence" and record.get("id") != not_of
    return waiting_for_evidence


def test_a_cycle_killed_outright_is_cleaned_up_by_the_next_one_and_a_stopped_one_cleans_up_after_itself(own, server, weak_champion):
    """SIGKILL runs no handler: the canary stays up and the lock stays taken until it expires. The
    next cycle ends that canary and counts the dead cycle failed; stopped by SIGTERM while it waits
    for evidence nobody sends (no load), it ends its own canary and frees the lock."""
    client = mlflow_client(own.tracking_uri)
    serve_champion(own, server, weak_champion)  # one a new candidate beats: the guard lets it by
    quick_lock = {"RETRAIN_LOCK_TIMEOUT_MIN": "0.1"}  # 6 s, refreshed at every stage and poll while the cycle lives
    killed = retrain_cli(own, server, **quick_lock)
    wait_for(started_canary(client, killed), "the first cycle's canary", timeout_s=240)
    killed.kill()
    killed.communicate(timeout=30)
    dead = read_record(client, "churn")
    plan = read_plan("churn", own.tracking_uri)
    assert (plan.champion, plan.challenger) == (weak_champion, dead["candidate"]) and dead["outcome"] is None
    assert LOCK_TAG in client.get_registered_model("churn").tags  # the dead cycle's: it expires
    failed_before = plan.cycle_counts["failed"]

    time.sleep(7)
    stopped = retrain_cli(own, server, **quick_lock)
    wait_for(started_canary(client, stopped, not_of=dead["id"]), "the next cycle's canary", timeout_s=240)
    plan = read_plan("churn", own.tracking_uri)
    assert plan.cycle_counts["failed"] == failed_before + 1  # the dead one, counted by the next
    assert plan.challenger not in (None, dead["candidate"])  # the dead canary ended; this one's began
    time.sleep(2)
    stopped.send_signal(signal.SIGTERM)
    output, _ = stopped.communicate(timeout=60)
    assert stopped.returncode == 4, output
    assert f"cycle {dead['id']} died at stage evidence" in output
    assert "Traceback" not in output and "the champion serves on" in output
    plan = read_plan("churn", own.tracking_uri)
    assert (plan.champion, plan.challenger, plan.share) == (weak_champion, None, 0.0)
    assert plan.cycle["outcome"] == "failed" and "stopped by signal" in plan.cycle["reason"]
    assert plan.cycle_counts["failed_in_a_row"] == 2  # the alert's condition (two in a row)
    assert LOCK_TAG not in client.get_registered_model("churn").tags
    assert CHALLENGER not in client.get_registered_model("churn").aliases
    assert audit.read(own.audit_log)[-1]["action"] == "retrain"
