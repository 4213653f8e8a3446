"""Faults under load, with the real parts: a redis-server killed and started again under a real
`bentoml serve`. Each test says what the clients saw and what was kept."""

from __future__ import annotations

import functools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import httpx
import pandas as pd
import pytest

from core.feature_sets import CHURN_FEATURES
from loadtests.servers import free_port, stop
from tests.integration.conftest import MlflowServer, RedisServer, latest_rows, start_server, wait_for
from training import store

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SCORE = "/api/v1/inference/churn-score"


@dataclass
class Answer:
    sent: float  # monotonic
    seconds: float
    request_id: str  # chosen by the client, so a request that got no answer can be looked for in the log
    status: int | None  # None: no HTTP answer (the connection was refused or closed)
    body: dict
    headers: httpx.Headers
    error: str | None = None


class Clients:
    """Threads that score known customers without pause and keep every answer or transport error.
    `fresh_connections` of them open a new connection per request; the others keep theirs alive."""

    def __init__(self, url: str, customers: list[str], threads: int = 4, fresh_connections: int = 0):
        self.url, self.customers = url, customers
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(seed, seed < fresh_connections)) for seed in range(threads)]

    def _run(self, seed: int, fresh: bool) -> None:
        rng = random.Random(seed)
        client = httpx.Client(timeout=30)
        while not self._stop.is_set():
            if fresh:
                client.close()
                client = httpx.Client(timeout=30)
            self.answers.append(post(client, f"{self.url}{SCORE}", {"customer_id": rng.choice(self.customers)}))
            if self.answers[-1].error:
                time.sleep(0.01)  # a refused connection returns at once
        client.close()

    @property
    def errors(self) -> list[Answer]:
        return [a for a in list(self.answers) if a.error]

    def since(self, moment: float, status: int) -> list[Answer]:
        return [a for a in list(self.answers) if a.sent > moment and a.status == status]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def post(client: httpx.Client, url: str, body: dict) -> Answer:
    request_id, sent = uuid.uuid4().hex, time.monotonic()
    try:
        response = client.post(url, json=body, headers={"X-Request-ID": request_id})
    except httpx.HTTPError as e:
        return Answer(sent, time.monotonic() - sent, request_id, None, {}, httpx.Headers(), repr(e))
    return Answer(sent, time.monotonic() - sent, request_id, response.status_code, response.json(), response.headers)


@pytest.fixture(scope="module")
def on_own_redis(settings, served_models, table, tmp_path_factory):
    """A server on a redis-server of its own (the features materialized and saved to its dump file,
    so a test that kills it starts it again with its data)."""
    tmp_path = tmp_path_factory.mktemp("own-redis")
    redis = RedisServer(tmp_path).start()
    redis_settings = settings.model_copy(update={"online_store": "redis", "redis_url": redis.url})
    store.apply(redis_settings)
    store.materialize(store.open_store(redis_settings), table["event_timestamp"].min(), table["event_timestamp"].max())
    redis.save()
    log_dir = tmp_path / "inference_log"
    process, url = start_server(settings, tmp_path, ONLINE_STORE="redis", REDIS_URL=redis.url, SERVING_REGISTRY_POLL_S="0",
                                SERVING_INFERENCE_LOG_DIR=str(log_dir), SERVING_INFERENCE_LOG_FLUSH_S="0.5")
    yield redis, url, log_dir
    stop(process)
    if redis.process.poll() is None:
        redis.stop()


def logged_request_ids(log_dir) -> set[str]:
    if not any((log_dir / "churn").rglob("*.parquet")):
        return set()
    return set(pd.read_parquet(log_dir / "churn", columns=["request_id"])["request_id"])


def test_a_killed_store_answers_503_naming_it_and_the_service_recovers_by_itself(on_own_redis, table):
    redis, url, log_dir = on_own_redis
    customers = list(latest_rows(table, 300).index)
    with Clients(url, customers) as clients:
        wait_for(lambda: len(clients.since(0, 200)) >= 50, "answers before the fault", 60)
        killed = time.monotonic()
        redis.kill()
        wait_for(lambda: len(clients.since(killed, 503)) >= 20, "503s while the store is down", 30)
        ready = httpx.get(f"{url}/ready", timeout=30)
        time.sleep(1)  # the outage goes on under load
        restarted = time.monotonic()
        redis.start()
        wait_for(lambda: len(clients.since(restarted, 200)) >= 20, "answers after the store is back", 30)
        recovered_s = min(a.sent + a.seconds for a in clients.since(restarted, 200)) - restarted

    assert clients.errors == []
    assert {a.status for a in clients.answers} <= {200, 503}
    refused = [a for a in clients.answers if a.status == 503]
    for answer in refused:  # a stable code and words; where the store is, only the log says
        assert answer.body["error"] == "store_unavailable" and "feature store" in answer.body["detail"]
        assert redis.url not in json.dumps(answer.body)
        assert int(answer.headers["Retry-After"]) >= 1
    # no hang: a refusal takes no longer than the store timeout (0.5 s) and the batch ahead of it
    assert max(a.seconds for a in refused) < 3.0
    assert ready.status_code == 503 and ready.json()["checks"]["churn"] is False
    assert ready.json()["checks"]["churn_error"] == "store_unavailable" and redis.url not in ready.text
    assert recovered_s < 5.0  # no restart: the next read after the retry window reaches the store
    assert httpx.get(f"{url}/ready", timeout=30).status_code == 200
    answered = {a.request_id for a in clients.answers if a.status == 200}
    wait_for(lambda: answered <= logged_request_ids(log_dir), "every answered request in the inference log", 30)
    print(f"store killed: {len(refused)} refusals, slowest {max(a.seconds for a in refused):.3f} s; "
          f"answering again {recovered_s:.2f} s after the restart; {len(answered)} answers, all logged")


def test_a_hung_store_costs_each_request_at_most_the_store_timeout(on_own_redis, table):
    """A store that accepts connections and never replies (SIGSTOP): the read gives up after
    SERVING_STORE_TIMEOUT_S instead of waiting for ever, and the next ones fail at once for a while."""
    redis, url, _ = on_own_redis
    with Clients(url, list(latest_rows(table, 300).index)) as clients:
        wait_for(lambda: len(clients.since(0, 200)) >= 50, "answers before the fault", 60)
        stopped = time.monotonic()
        redis.process.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: len(clients.since(stopped, 503)) >= 20, "503s while the store hangs", 30)
            health = httpx.get(f"{url}/health", timeout=30)
        finally:
            resumed = time.monotonic()
            redis.process.send_signal(signal.SIGCONT)
        wait_for(lambda: len(clients.since(resumed, 200)) >= 20, "answers after the store resumes", 30)
    refused = [a for a in clients.answers if a.status == 503]
    assert clients.errors == [] and {a.status for a in clients.answers} <= {200, 503}
    assert all(a.body["error"] == "store_unavailable" for a in refused)
    assert all("feature store" in a.body["detail"] for a in refused)
    assert max(a.seconds for a in refused) < 3.0 and health.status_code == 200
    print(f"store hung: {len(refused)} refusals, slowest {max(a.seconds for a in refused):.3f} s")


def worker_rss(process) -> int:
    """Resident bytes of the server's worker processes."""
    import psutil

    return sum(child.memory_info().rss for child in psutil.Process(process.pid).children(recursive=True))


def lone_latency_ms(url: str, customer: str, calls: int = 20) -> float:
    """Median latency of sequential requests: what a client sees on an idle service."""
    times = []
    with httpx.Client(timeout=30) as client:
        for _ in range(calls):
            started = time.perf_counter()
            assert client.post(f"{url}{SCORE}", json={"customer_id": customer}).status_code == 200
            times.append(1000 * (time.perf_counter() - started))
    return sorted(times)[len(times) // 2]


def test_overload_is_shed_with_503s_and_the_accepted_requests_keep_a_bounded_latency(settings, served_models, table, tmp_path):
    """A bounded client (wrk, 128 connections) sending on schedule at four times the throughput the
    service saturates at, measured first in the same run, for OVERLOAD_SECONDS (10 by default; `make
    faults` runs 60); beside it, eight clients in sequence measure what a caller sees. Each worker
    process holds at most SERVING_MAX_IN_PROGRESS=16 scoring requests."""
    import os
    import shutil
    from urllib.parse import urlparse

    from loadtests.bench_serving import WRK_SCRIPT, scheduled, wrk

    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (Debian: apt-get install wrk); the overload test drives the service with it")
    seconds = int(os.environ.get("OVERLOAD_SECONDS", "10"))
    customers = list(latest_rows(table, 300).index)
    script = WRK_SCRIPT % (",".join(f'"{c}"' for c in customers), '{"customer_id":"', '"}')
    (tmp_path / "closed.lua").write_text(script)
    process, url = start_server(settings, tmp_path, SERVING_MAX_IN_PROGRESS="16", SERVING_REGISTRY_POLL_S="0")
    port = urlparse(url).port
    try:
        idle_ms = lone_latency_ms(url, customers[0])
        saturation = wrk(port, tmp_path / "closed.lua", 5, 16, SCORE)["requests_per_s"]  # also the warm-up
        (tmp_path / "overload.lua").write_text(scheduled(script, 4 * saturation))
        # the baseline after 2 s of the overload itself: what 128 connections allocate once (buffers,
        # the allocator's arenas) is not growth; in 10 s runs from the warm-up it was 6% to 11% of RSS
        wrk(port, tmp_path / "overload.lua", 2, 128, SCORE)
        rss_before = worker_rss(process)
        probe = Clients(url, customers, threads=8)
        with probe:
            load = wrk(port, tmp_path / "overload.lua", seconds, 128, SCORE)
        rss_after = worker_rss(process)
        stopped = time.monotonic()
        after_ms = lone_latency_ms(url, customers[0])
        recovered_s = time.monotonic() - stopped
    finally:
        stop(process)
    accepted = sorted(a.seconds for a in probe.answers if a.status == 200)
    shed = [a for a in probe.answers if a.status == 503]
    assert probe.errors == [] and {a.status for a in probe.answers} <= {200, 503}
    assert load["non_2xx"] > 0 and load["socket_errors"] == 0  # shed, and nothing waited past wrk's 2 s timeout
    assert all(a.body["error"] == "overloaded" and a.headers["Retry-After"] for a in shed)
    # what the service answers (mostly refusals) sets how much of the schedule a bounded client can
    # send; were a refusal as dear as a scoring, it would barely pass saturation (two runs of this
    # test on the 2-core machine sent 1.95 and 2.21 times it, so the bound leaves room for noise)
    assert load["requests_per_s"] > 1.5 * saturation
    # a few clients among wrk's 128 win few slots, so every accepted one is held to the bound, not a percentile
    assert accepted and accepted[-1] < 1.0
    assert rss_after < 1.10 * rss_before
    assert after_ms < 2 * idle_ms + 5 and recovered_s < 5
    print(f"overload ({seconds} s, limit 16 a worker): saturation {saturation:.0f}/s; scheduled {4 * saturation:.0f}/s on 128 "
          f"connections, sent {load['requests_per_s']:.0f}/s ({load['behind_schedule']} of {load['requests']} behind schedule), "
          f"{load['requests'] - load['non_2xx']} scored, {load['non_2xx']} shed; the probe: {len(accepted)} accepted "
          f"(slowest {1000 * accepted[-1]:.0f} ms), {len(shed)} shed; worker RSS {rss_before / 2**20:.0f} -> "
          f"{rss_after / 2**20:.0f} MiB; lone request {idle_ms:.1f} ms before, {after_ms:.1f} ms right after")


def metric(url: str, name: str) -> float:
    """The value of one series in the service's Prometheus exposition (summed over its workers)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_an_unwritable_inference_log_does_not_stop_serving_and_keeps_the_newest_rows_up_to_its_bound(
        settings, served_models, table, tmp_path):
    blocked = tmp_path / "inference_log"
    blocked.write_text("a file where the log's folder should be: the service runs as root in CI, so permissions would not stop it")
    process, url = start_server(settings, tmp_path, SERVING_INFERENCE_LOG_DIR=str(blocked), SERVING_INFERENCE_LOG_FLUSH_S="0.5",
                                # a bound a healthy log never reaches between two writes on a busy machine (at
                                # 300, answers after the folder came back were dropped too, once in CI)
                                SERVING_INFERENCE_LOG_MAX_ROWS="3000", SERVING_REGISTRY_POLL_S="0")
    dropped_series = 'fintech_inference_log_dropped_rows_total{model="churn"}'
    try:
        with Clients(url, list(latest_rows(table, 300).index)) as clients:
            wait_for(lambda: metric(url, dropped_series) > 0, "rows dropped past the bound", 60)
            status = httpx.get(f"{url}/models/status", timeout=30).json()["churn"]["inference_log"]
            held = metric(url, 'fintech_inference_log_backlog_rows{model="churn"}')
            blocked.unlink()
            unblocked = time.monotonic()
            wait_for(lambda: httpx.get(f"{url}/models/status", timeout=30).json()["churn"]["inference_log"]["write_error"] is None,
                     "the log writing again", 30)
            wait_for(lambda: len(clients.since(unblocked + 2, 200)) >= 20, "answers after the folder is back", 30)
        answers = [a for a in clients.answers if a.status == 200]
        assert clients.errors == [] and len(answers) == len(clients.answers)  # serving never stopped
        assert "NotADirectoryError" in status["write_error"] and status["dropped_rows"] > 0
        assert 0 < held <= 3000
        # what was answered after the folder came back is all in the log
        later = {a.request_id for a in answers if a.sent > unblocked + 2}
        wait_for(lambda: later <= logged_request_ids(blocked), "the answers after the outage in the log", 30)
        lost = {a.request_id for a in answers} - logged_request_ids(blocked)
        dropped = metric(url, dropped_series)
        assert 0 < len(lost) <= dropped  # only what was counted as dropped is missing
        print(f"inference log blocked: {len(answers)} answers, none failed; {held:.0f} rows held (bound 3,000), "
              f"{dropped:.0f} dropped and counted, {len(lost)} answered rows missing from the log")
    finally:
        stop(process)


def deployment_timings() -> tuple[float, float]:
    """The serving pod's preStop sleep and termination grace period in k8s/, in seconds."""
    import yaml

    from loadtests.servers import ROOT

    pod = yaml.safe_load((ROOT / "k8s/serving/deployment.yaml").read_text())["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "serving")
    return container["lifecycle"]["preStop"]["sleep"]["seconds"], pod["terminationGracePeriodSeconds"]


def test_a_sigterm_under_load_finishes_what_was_accepted_refuses_the_rest_and_flushes_the_log(
        settings, served_models, table, tmp_path):
    """SIGTERM while six clients score (two on a new connection per request) and a churn-batch of
    4,000 ids is being scored. The log's timer is longer than the test, and its rows stay under the
    5,000 that wake the writer: it is written at shutdown."""
    log_dir = tmp_path / "inference_log"
    process, url = start_server(settings, tmp_path, SERVING_INFERENCE_LOG_DIR=str(log_dir),
                                SERVING_INFERENCE_LOG_FLUSH_S="3600", SERVING_REGISTRY_POLL_S="0")
    customers = list(latest_rows(table, 500).index)
    batch: list[Answer] = []
    with Clients(url, customers, threads=6, fresh_connections=2) as clients:
        wait_for(lambda: len(clients.since(0, 200)) >= 300, "answers before the signal", 60)
        with httpx.Client(timeout=60) as client:
            client.get(f"{url}/health")  # the connection is open before the batch is sent
            sender = threading.Thread(target=lambda: batch.append(
                post(client, f"{url}/api/v1/inference/churn-batch", {"customer_ids": (customers * 8)[:4_000]})))
            sender.start()
            time.sleep(0.05)  # the batch is being scored
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=90) == 0
            exited_s = time.monotonic() - signalled
            sender.join()
        time.sleep(0.5)  # requests sent after the exit are refused

    before = [a for a in clients.answers + batch if a.sent < signalled]
    after = [a for a in clients.answers if a.sent >= signalled]
    # what was sent before the signal was answered, the batch included, though it was still being scored
    assert len(before) >= 300 and all(a.status == 200 for a in before)
    assert batch[0].sent + batch[0].seconds > signalled and batch[0].body["count"] == 4_000
    # what came after was answered or refused at the connection, never a 5xx, and never hung past the exit
    refused = [a for a in after if a.error]
    assert refused and all(a.status in (200, None) for a in after)
    assert all(a.sent + a.seconds < signalled + exited_s + 1 for a in refused)
    # every answer is in the log, written at shutdown; no refused request was scored (a retry is safe)
    logged = logged_request_ids(log_dir)
    answered = {a.request_id for a in clients.answers + batch if a.status == 200}
    assert answered <= logged and not {a.request_id for a in refused} & logged
    one = next(a for a in before if a.body.get("model"))
    row = pd.read_parquet(log_dir / "churn", filters=[("request_id", "==", one.request_id)]).iloc[0]
    assert (row["role"], row["version"]) == (one.body["model"]["role"], one.body["model"]["version"])
    assert set(CHURN_FEATURES) <= set(row.index) and 0 <= row["score"] <= 1
    # the pod waits preStop, then drains: the grace period leaves twice the measured drain
    prestop_s, grace_s = deployment_timings()
    assert prestop_s + 2 * exited_s <= grace_s
    print(f"SIGTERM under load: {len(before)} requests sent before it, all answered (the 4,000-id batch in "
          f"{batch[0].seconds:.2f} s); after it {len(after) - len(refused)} answered and {len(refused)} refused at the "
          f"connection; exit {exited_s:.2f} s after the signal; {len(answered)} answers, all in the log")


def answered_fraud_and_segments(url: str, customers: list[str], n: int = 60) -> dict[str, int]:
    """`n` fraud-detection requests, each with a transaction of its own (some meet a fraud rule: an
    amount over its limit, a sanctioned country), and `n` segment requests; how many of each were
    answered 200."""
    rng = random.Random(5)
    answered = {"fraud": 0, "segment": 0}
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            transaction = {"amount": rng.choice([4.5, 39.3, 820.0, 2600.0, 12_000.0]),
                           "merchant_category": rng.choice(["groceries", "travel", "electronics"]),
                           "channel": rng.choice(["pos", "online"]), "country": rng.choice(["GB", "FR", "KP"]), "device_id": f"D-new-{i}",
                           "timestamp": "2026-10-15T13:56:49Z"}
            customer = rng.choice(customers)
            answered["fraud"] += post(client, f"{url}/api/v1/inference/fraud-detection",
                                      {"customer_id": customer, "transaction": transaction}).status == 200
            answered["segment"] += post(client, f"{url}/api/v1/inference/segment", {"customer_id": customer}).status == 200
    assert answered == {"fraud": n, "segment": n}, answered
    return answered


def test_a_sigkill_under_load_loses_no_answered_decision_and_each_replays_exactly(settings, served_models, table, tmp_path):
    """SIGKILL to the server and its workers while six clients score, what an OOM kill or a node's
    failure does: every request answered 200 is in the log once the journal the workers left is
    recovered, the log's chain holds, and every decision scores again to the logged one. The log's
    timer is longer than the test, so the answered rows are in the journal alone when it dies."""
    import psutil
    from typer.testing import CliRunner

    from monitoring.cli import app as monitoring_cli

    log_dir = tmp_path / "inference_log"
    process, url = start_server(settings, tmp_path, SERVING_INFERENCE_LOG_DIR=str(log_dir), SERVING_WORKERS="2",
                                SERVING_INFERENCE_LOG_FLUSH_S="3600", SERVING_REGISTRY_POLL_S="0")
    customers = list(latest_rows(table, 500).index)
    with Clients(url, customers, threads=6, fresh_connections=1) as clients:
        other_families = answered_fraud_and_segments(url, customers)  # in the journal too, with churn's
        wait_for(lambda: len(clients.since(0, 200)) >= 1_000, "answers before the kill", 60)
        for victim in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]:
            victim.kill()
        process.wait(timeout=30)
        time.sleep(0.5)  # what is sent now is refused at the connection
    answered = {a.request_id for a in clients.answers if a.status == 200}
    in_files = logged_request_ids(log_dir)
    cli = functools.partial(CliRunner().invoke, monitoring_cli, env={"DATA_DIR": str(settings.data_dir)})
    recovered = cli(["recover-log", "--log-dir", str(log_dir)])
    assert recovered.exit_code == 0, recovered.output
    logged = logged_request_ids(log_dir)
    assert answered <= logged, f"{len(answered - logged)} answered decisions missing from the log"
    verified = cli(["verify", "--log-dir", str(log_dir)])  # every family's
    assert verified.exit_code == 0 and verified.output.count("the chain holds") == 3, verified.output
    replayed = cli(["replay", "--model", "churn", "--log-dir", str(log_dir)])
    assert replayed.exit_code == 0 and f"{len(logged):,} of {len(logged):,} logged decisions reproduced exactly" in replayed.output, \
        replayed.output
    hits = pd.read_parquet(log_dir / "fraud", columns=["rules"])["rules"]
    assert hits.str.contains("sanctioned-country:block").any() and hits.str.contains("large-amount:review").any()
    for family, count in other_families.items():  # fraud's request-time features, its rule hits and segment's ids replay as exactly
        replayed = cli(["replay", "--model", family, "--log-dir", str(log_dir)])
        assert replayed.exit_code == 0 and f"{count:,} of {count:,} logged decisions" in replayed.output, replayed.output
    print(f"SIGKILL under load: {len(answered)} answered, {len(in_files)} of them in files before the kill, all "
          f"{len(logged)} logged after recovery ({len(logged - answered)} scored and not answered); every family's chain "
          f"holds; replay: {len(logged)} of {len(logged)} churn rows exact, and the {other_families} fraud and segment rows")


def family_status(url: str, family: str = "churn") -> dict:
    return httpx.get(f"{url}/models/status", timeout=30).json()[family]


def rollout_cli(*args: str, **env: str) -> subprocess.Popen:
    """The rollout CLI, started; `.communicate()` gives its output."""
    from loadtests.servers import ROOT

    return subprocess.Popen([sys.executable, "-m", "rollout", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, **env})


@pytest.fixture(scope="module")
def followed_registry(settings, served_models, tmp_path_factory):
    """A real `mlflow server` in front of the registry, and a server following it: it polls every
    second, waits at most 1 s per read and backs off to 4 s between reads while they fail."""
    tmp_path = tmp_path_factory.mktemp("followed-registry")
    registry = MlflowServer(settings.tracking_uri, tmp_path).start()
    process, url = start_server(settings, tmp_path, MLFLOW_TRACKING_URI=registry.url, SERVING_REGISTRY_POLL_S="1",
                                SERVING_REGISTRY_MAX_BACKOFF_S="4", SERVING_REGISTRY_TIMEOUT_S="1")
    yield registry, url
    stop(process)
    registry.stop()


def register_churn_copy(settings, champion, name: str, booster=None, **metadata) -> str:
    """A new churn version: the champion's booster (or `booster`) with its metadata changed by `metadata`."""
    import mlflow.xgboost

    from training.registry import pip_requirements, use_experiment

    use_experiment("fintech-broken-versions", settings.tracking_uri, settings.artifact_root)
    with mlflow.start_run(run_name=name):
        info = mlflow.xgboost.log_model(booster or champion.model, name="model", registered_model_name="churn",
                                        metadata={**champion.metadata, **metadata}, model_format="ubj",
                                        pip_requirements=pip_requirements("xgboost"))
    return str(info.registered_model_version)


def nan_leaves(booster):
    """The booster with its first tree's leaves NaN: every score it gives is NaN."""
    import xgboost as xgb

    model = json.loads(booster.save_raw("json"))
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["split_conditions"] = [float("nan") if child == -1 else c for child, c in zip(tree["left_children"], tree["split_conditions"])]
    return xgb.Booster(model_file=bytearray(json.dumps(model).encode()))


def test_a_broken_version_named_by_the_registry_is_refused_and_the_live_set_keeps_serving(
        followed_registry, settings, table, tmp_path):
    """Three broken churn versions, each named by the registry in turn while clients score: files that
    do not load, features its FeatureService does not serve, and NaN scores (that one promoted)."""
    from core.registry import CHALLENGER, CHAMPION, mlflow_client, read_plan
    from scoring.loading import from_registry

    client, champion = mlflow_client(settings.tracking_uri), read_plan("churn", settings.tracking_uri).champion
    loaded = from_registry("churn", champion, settings.tracking_uri, tmp_path / "cache")
    corrupt = register_churn_copy(settings, loaded, "corrupt")
    source = Path(client.get_model_version_download_uri("churn", corrupt).removeprefix("file://"))
    (source / "model.ubj").write_bytes(b"not a model")
    unserved = register_churn_copy(settings, loaded, "unserved", features=[*loaded.metadata["features"][:-1], "spend_365d"])
    nan = register_churn_copy(settings, loaded, "nan", booster=nan_leaves(loaded.model))
    _, url = followed_registry
    refused, seconds = {}, {}
    try:
        with Clients(url, list(latest_rows(table, 300).index)) as clients:
            for version, alias in ((corrupt, CHALLENGER), (unserved, CHALLENGER), (nan, CHAMPION)):
                if alias == CHAMPION:
                    client.delete_registered_model_alias("churn", CHALLENGER)
                named = time.monotonic()
                client.set_registered_model_alias("churn", alias, version)
                wait_for(lambda v=version: v in family_status(url)["refused_versions"], f"version {version} refused", 30)
                seconds[version] = time.monotonic() - named
                refused[version] = family_status(url)
                refused[version]["metric"] = metric(url, 'fintech_model_version_refused{model="churn"}')
            client.set_registered_model_alias("churn", CHAMPION, champion)
            wait_for(lambda: metric(url, 'fintech_model_version_refused{model="churn"}') == 0, "the refusal cleared", 30)
    finally:
        client.set_registered_model_alias("churn", CHAMPION, champion)
        if CHALLENGER in client.get_registered_model("churn").aliases:
            client.delete_registered_model_alias("churn", CHALLENGER)

    answers = [a for a in clients.answers if a.status == 200]
    assert clients.errors == [] and len(answers) == len(clients.answers)
    assert {a.body["model"]["version"] for a in answers} == {champion}
    for version, status in refused.items():
        assert [v["version"] for v in status["versions"]] == [champion] and status["metric"] >= 1
    assert "does not load" in refused[corrupt]["refused_versions"][corrupt]
    assert "does not serve: ['spend_365d']" in refused[unserved]["refused_versions"][unserved]
    assert "scores [nan, nan, nan]" in refused[nan]["refused_versions"][nan]
    print(f"broken versions refused while {len(answers)} requests were answered by version {champion}, none failed: "
          + ", ".join(f"{why} (v{v}) in {seconds[v]:.1f} s" for v, why in ((corrupt, "corrupt files"),
                      (unserved, "an unserved feature"), (nan, "NaN scores, promoted"))))


def test_a_registry_that_stops_answering_leaves_serving_alone_and_is_followed_again_when_back(followed_registry, table):
    """The registry's server paused (SIGSTOP: connections hang) under load, and the rollout CLI run
    against it and against an address where nothing listens."""
    registry, url = followed_registry
    before = family_status(url)
    with Clients(url, list(latest_rows(table, 300).index), threads=2) as clients:
        wait_for(lambda: len(clients.since(0, 200)) >= 50, "answers before the fault", 60)
        paused = time.monotonic()
        registry.pause()
        try:
            wait_for(lambda: family_status(url)["registry_error"] is not None, "the registry error in the status", 30)
            clis = [rollout_cli("status", "churn", MLFLOW_TRACKING_URI=registry.url, MLFLOW_HTTP_REQUEST_TIMEOUT="2"),
                    rollout_cli("canary", "churn", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")]
            outputs = [(cli.communicate(timeout=300)[1], cli.returncode) for cli in clis]
            # the CLIs give up within seconds: the outage lasts until the service has failed three times
            # (three reads of 1 s, with 2 s and then 4 s of back-off between them: 9 s at the least)
            wait_for(lambda: family_status(url)["registry_failures"] >= 3, "a third failed read of the registry", 30)
            during, outage_s = family_status(url), time.monotonic() - paused
        finally:
            resumed = time.monotonic()
            registry.resume()
        wait_for(lambda: family_status(url)["registry_error"] is None, "the service following the registry again", 30)
        recovered_s = time.monotonic() - resumed

    assert before["registry_error"] is None and clients.errors == [] and {a.status for a in clients.answers} == {200}
    assert during["versions"] == before["versions"]  # serving goes on with what it holds
    assert registry.url in during["registry_error"] and "timed out" in during["registry_error"].lower()
    assert datetime.fromisoformat(during["registry_error_since"]) <= datetime.now(UTC)
    # polled every second and given up after 1 s, it would have failed about outage_s / 2 times
    assert 3 <= during["registry_failures"] <= outage_s / 3
    for stderr, returncode in outputs:
        assert returncode == 3 and "does not answer" in stderr and "Traceback" not in stderr
    assert recovered_s < 15  # the longest wait between polls (4 s), a read, and the requests queued while paused
    print(f"registry paused {outage_s:.0f} s: {len(clients.answers)} answers, none failed; {during['registry_failures']} "
          f"failed reads (backing off); the CLI exited 3 against it and against a wrong address; followed again "
          f"{recovered_s:.1f} s after it resumed")


def test_rows_older_than_their_views_limit_are_marked_refused_or_reviewed_as_each_family_says(settings, served_models, table, tmp_path):
    """The session's store holds rows of the synthetic period, months old: with the default limits
    (36 hours for the batch views) every answer names its stale views; churn set to refuse answers
    503 naming them; fraud set to review sends each transaction it would accept to review. Each
    view's age and the stale rows are in the metrics."""
    process, url = start_server(settings, tmp_path, SERVING_CHURN__STALE="refuse", SERVING_FRAUD__STALE="review",
                                SERVING_FRAUD__MAX_AGE_S=json.dumps({"customer_activity": 1e12, "customer_risk_profile": 60}),
                                SERVING_REGISTRY_POLL_S="0")
    customers = list(latest_rows(table, 20).index)
    # each customer's own last device and country, in the afternoon: transactions the model mostly accepts
    raw = pd.read_parquet(settings.data_dir / "raw" / "transactions.parquet", columns=["customer_id", "device_id", "country"])
    usual = raw[raw["customer_id"].isin(customers)].groupby("customer_id").last()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            refused = client.post("/api/v1/inference/churn-score", json={"customer_id": customers[0]})
            assert refused.status_code == 503 and refused.json()["error"] == "stale_features", refused.text
            assert "customer_activity" in refused.json()["detail"] and refused.headers["retry-after"]
            segment = client.post("/api/v1/inference/segment", json={"customer_id": customers[0]}).json()  # default: mark
            assert "customer_activity" in segment["stale_views"] and segment["feature_age_s"]["customer_activity"] > 36 * 3600
            frauds = [client.post("/api/v1/inference/fraud-detection", json={"customer_id": c, "transaction": {
                "amount": 12.5, "merchant_category": "groceries", "channel": "pos", "country": usual.loc[c, "country"],
                "device_id": usual.loc[c, "device_id"], "timestamp": "2026-10-15T13:56:49Z"}}).json() for c in usual.index]
            exported = client.get("/metrics").text
    finally:
        stop(process)
    assert all(f["stale_views"] == ["customer_risk_profile"] for f in frauds)  # activity's limit is out of reach here
    below = [f for f in frauds if f["fraud_probability"] < f["threshold"]]
    assert below and all(f["outcome"] == "review" for f in below), frauds  # accepted on the score, reviewed as stale
    assert all(f["outcome"] == "block" for f in frauds if f["fraud_probability"] >= f["block_threshold"])
    assert 'fintech_stale_rows_total{model="churn",policy="refuse",view="customer_activity"}' in exported
    assert 'fintech_stale_rows_total{model="fraud",policy="review",view="customer_risk_profile"}' in exported
    assert re.search(r'fintech_feature_age_seconds_count\{feature_service="fraud_v[12]",view="customer_risk_profile"\}', exported)
