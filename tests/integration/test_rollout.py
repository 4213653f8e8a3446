"""Canary rollouts on a real `bentoml serve` (authentication on, the local key), the real MLflow
registry and a real HTTP client under continuous load: a good challenger is promoted and a bad one
refused, with no failed request; the rollout CLI authenticates and every change is audited."""

import json
import os
import subprocess
import sys
import time
from collections import defaultdict

import httpx
import mlflow
import numpy as np
import pytest

from core import audit
from core.api_keys import client_headers, ensure_local_key, new_key
from core.registry import CHALLENGER, CHAMPION, PREVIOUS_TAG, SHADOW_TAG, SHARE_TAG, mlflow_client, read_plan
from loadtests.servers import ROOT, stop
from rollout.promotion import read_evidence
from rollout.settings import GateSettings
from rollout.steps import PROMOTIONS_EXPERIMENT, ask_service_to_reload, fetch_metrics, promote, rollback, start_canary
from tests.integration.conftest import LoadClient, latest_rows, start_server, wait_for
from training import models, pipeline, registry, store

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# The load client shares the two cores with the server, so latency is noisy here: the latency gate
# gets room (the default is 1.5); the other gates keep their defaults.
GATES = GateSettings(min_predictions=600, max_p99_ratio=3.0)


def register_churn(settings, shuffled_labels: bool = False) -> str:
    """Train and register a churn version; with shuffled labels it has learnt nothing."""
    frame = pipeline.churn_training_set(store.open_store(settings), settings)
    if shuffled_labels:
        frame = frame.assign(churned=np.random.default_rng(0).permutation(frame["churned"].to_numpy()))
    trained = models.train_churn(frame, settings.seed)
    return registry.log_and_register(trained, frame, "churn_v1", settings.tracking_uri, settings.artifact_root).version


def challenger_predictions(url: str, champion: str, challenger: str) -> int:
    return read_evidence(fetch_metrics(url), "churn", champion, challenger)[CHALLENGER].predictions


@pytest.fixture(scope="module", autouse=True)
def churn_registry_restored(settings):
    """churn's aliases and canary tags as the module found them, however it ends: the later modules'
    servers follow this registry, and a canary left on churn would split their traffic."""
    client = mlflow_client(settings.tracking_uri)
    model = client.get_registered_model("churn")
    yield
    client.set_registered_model_alias("churn", CHAMPION, model.aliases[CHAMPION])
    if CHALLENGER in model.aliases:
        client.set_registered_model_alias("churn", CHALLENGER, model.aliases[CHALLENGER])
    elif CHALLENGER in client.get_registered_model("churn").aliases:
        client.delete_registered_model_alias("churn", CHALLENGER)
    for tag, ended in ((SHARE_TAG, "0"), (SHADOW_TAG, "false"), (PREVIOUS_TAG, "")):  # as a rollback leaves them
        client.set_registered_model_tag("churn", tag, (model.tags or {}).get(tag, ended))


@pytest.fixture(scope="module")
def key(settings):
    """The local key, as `make up` makes it: the load client and the CLI send it."""
    ensure_local_key(settings.secrets_dir)
    return client_headers(settings.secrets_dir)


def serving(url: str, key: dict) -> dict[str, str]:
    return {v["role"]: v["version"] for v in httpx.get(f"{url}/models/status", headers=key).json()["churn"]["versions"]}


def reload(url: str, key: dict) -> dict:
    return ask_service_to_reload(url, "test", key)


@pytest.fixture(scope="module")
def server(settings, served_models, key, tmp_path_factory):
    # the load client's six threads may outrun the default 1,000 requests/s of one client
    unlimited = json.dumps({"local": {"inference": {"per_s": 1e6, "burst": 10**6}}})
    process, url = start_server(settings, tmp_path_factory.mktemp("serve"), ONLINE_STORE="sqlite", SERVING_REGISTRY_POLL_S="2",
                                AUTH_MODE="on", AUTH_RATE_LIMITS=unlimited)
    yield process, url
    stop(process)


@pytest.fixture(scope="module")
def customers(table):
    return latest_rows(table, 1000).index.tolist()


@pytest.fixture(scope="module")
def promotion(server, settings, customers, key):
    """A canary of a good challenger (retrained on the same data) for half the customers, in
    shadow for the other half, promoted while the load client runs."""
    process, url = server
    before = read_plan("churn", settings.tracking_uri).champion
    good = register_churn(settings)
    start_canary(settings, "churn", good, share=50, shadow=True)
    # The service polls the registry too (every 2 s here): a poll may take the canary up first, and
    # this reload then changes nothing. It waits for the poll's lock, so what is live after it counts.
    answer = reload(url, key)
    assert isinstance(answer, dict), answer  # a string: the service did not answer
    churn = answer["churn"]
    assert ({v["role"]: v["version"] for v in churn["versions"]}, churn["challenger_share"], churn["shadow"]) == (
        {CHAMPION: before, CHALLENGER: good}, 50.0, True), churn
    with LoadClient(url, customers, headers=key) as load:
        wait_for(lambda: challenger_predictions(url, before, good) >= GATES.min_predictions, "the canary's evidence")
        wait_for(lambda: logged_rows(settings, good) > 0, "the challenger's rows in the inference log's files")
        promoted_at = time.monotonic()
        report = promote(settings, GATES, "churn", fetch_metrics(url))
        reloaded = reload(url, key)
        wait_for(lambda: sum(1 for a in load.answers if a[0] > promoted_at and a[2] == good and a[3] == CHAMPION) >= 100,
                 "answers from the new champion")
    return {"before": before, "good": good, "report": report, "reload": reloaded, "load": load,
            "promoted_at": promoted_at, "process": process}


def logged_rows(settings, version: str) -> int:
    """Rows of `version` in the churn log's files (the flips count those; rows still in the journal are not)."""
    from core.decision_log import NoLog, read_window

    try:
        return len(read_window(settings.data_dir / "inference_log" / "churn", version=version, roles=("challenger", "shadow")))
    except NoLog:
        return 0


def test_a_canary_is_sticky_and_both_versions_answer(promotion):
    load = promotion["load"]
    during = [a for a in load.answers if a[0] < promotion["promoted_at"]]
    versions_seen = defaultdict(set)
    for _, customer, version, *_ in during:
        versions_seen[customer].add(version)
    assert all(len(v) == 1 for v in versions_seen.values())  # one customer, one version for the whole canary
    roles = [a[3] for a in during]
    assert 0.4 < roles.count(CHALLENGER) / len(roles) < 0.6  # 50% of customers, drawn at random


def test_a_good_challenger_is_promoted_under_load_without_a_failed_request(promotion, settings, server):
    report, load = promotion["report"], promotion["load"]
    assert report["decision"] == "promote", report["gates"]
    assert read_plan("churn", settings.tracking_uri).champion == promotion["good"]
    assert promotion["reload"]["churn"]["versions"] == [{"name": "churn", "version": promotion["good"], "role": CHAMPION,
                                                         "feature_service": "churn_v1"}]
    assert load.failures == [] and len(load.answers) > 500
    assert server[0].poll() is None and promotion["process"].pid == server[0].pid  # no restart
    json_file, md_file = report["report_files"]
    assert "Decision: **promote**" in open(md_file).read()
    # the champion, given the rows the challenger scored, mostly decides as it did: counted, not gated by default
    flips = report["flips"]
    assert flips["compared"] > 0 and flips["flip_rate"] < 0.5, flips
    assert next(g for g in report["gates"] if g["name"] == "decision_flips")["passed"] is None
    assert "Decision flips: on " in open(md_file).read()
    mlflow.set_tracking_uri(settings.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[PROMOTIONS_EXPERIMENT])
    assert "promote" in set(runs["tags.decision"])


def test_a_bad_challenger_is_refused_and_rollback_restores_the_old_champion(promotion, server, settings, customers, key):
    _, url = server
    champion, bad = promotion["good"], register_churn(settings, shuffled_labels=True)
    start_canary(settings, "churn", bad, share=50, shadow=True)
    reload(url, key)
    with LoadClient(url, customers, threads=4, headers=key) as load:
        wait_for(lambda: challenger_predictions(url, champion, bad) >= GATES.min_predictions, "the canary's evidence")
        wait_for(lambda: logged_rows(settings, bad) > 0, "the challenger's rows in the inference log's files")
    report = promote(settings, GATES.model_copy(update={"max_flip_rate": 0.2}), "churn", fetch_metrics(url))
    assert report["decision"] == "refuse" and "quality" in report["failed_gates"], report["gates"]
    # a model of shuffled labels orders customers at random: its risk levels are the champion's by chance alone
    assert report["flips"]["flip_rate"] > promotion["report"]["flips"]["flip_rate"], report["flips"]
    assert "decision_flips" in report["failed_gates"], report["flips"]
    assert load.failures == []
    assert read_plan("churn", settings.tracking_uri).champion == champion  # nothing moved

    rollback(settings, "churn")  # gives champion back to the version before the promotion, ends the canary
    plan = read_plan("churn", settings.tracking_uri)
    assert (plan.champion, plan.challenger, plan.share) == (promotion["before"], None, 0.0)
    reload(url, key)
    assert serving(url, key) == {CHAMPION: promotion["before"]}


def rollout_cli(settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rollout", *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "DATA_DIR": str(settings.data_dir), "MLFLOW_TRACKING_URI": settings.tracking_uri, **env})


def test_the_rollout_cli_authenticates_and_every_change_is_in_the_audit_log(promotion, server, settings, key):
    _, url = server
    before = len(audit.read(settings.audit_log))
    version = register_churn(settings)
    canary = rollout_cli(settings, "canary", "churn", "--version", version, "--share", "5", "--service-url", url)
    assert canary.returncode == 0, canary.stderr
    reader = new_key(settings.secrets_dir / "api_keys.json", "retention-app", ["inference"])
    time.sleep(1.1)  # the service re-reads the key file once a second
    refused = rollout_cli(settings, "rollback", "churn", "--service-url", url, FINTECH_API_KEY=reader)
    assert refused.returncode == 2 and "admin" in refused.stderr and reader not in refused.stderr + refused.stdout
    assert read_plan("churn", settings.tracking_uri).challenger == version  # refused before anything changed
    rolled_back = rollout_cli(settings, "rollback", "churn", "--service-url", url)
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert read_plan("churn", settings.tracking_uri).challenger is None

    records = audit.read(settings.audit_log)[before:]
    assert [(r["action"], r["source"], r["actor"], r["via"], r["verified"]) for r in records] == [
        ("canary", "rollout", "local", "api_key", True), ("reload", "service", "local", "api_key", True),
        ("rollback", "rollout", "local", "api_key", True), ("reload", "service", "local", "api_key", True)]
    assert records[0]["details"]["challenger"] == version and records[1]["details"]["reason"] == f"canary churn {version} at 5%"
    assert all(r["at"] for r in records)
    reports = [p.read_text() for p in (settings.data_dir / "reports").rglob("*") if p.is_file()]
    assert reports  # the promotion reports of the tests above
    for text in (settings.audit_log.read_text(), *reports, canary.stdout, canary.stderr, rolled_back.stdout, rolled_back.stderr):
        assert key["X-API-Key"] not in text
