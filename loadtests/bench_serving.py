"""Serving benchmark: this service against the naive design and the framework's ceilings, in one run.

    python -m loadtests.bench_serving        (make bench-serving; needs `make up` first and wrk)

The targets, each on 2 worker processes, the same machine, store, model and load generator:
  (a) this service: POST churn-score by customer id, with reason codes, the inference log and the
      metrics on (bentoml serve bentos.service:FintechAPI);
  (b) the naive design (loadtests/baselines/naive_app.py: FastAPI, Feast's SDK and XGBoost per
      request, one uvicorn worker per core);
  (c) a no-op route of a FastAPI app served by BentoML on the service's options, with the same body
      validation (loadtests/baselines/noop_service.py);
  (g) a no-op `@bentoml.api`, BentoML's own way to serve a route, on the same options
      (loadtests/baselines/bentoml_api_noop_service.py). (c) and (g) are BentoML's no-op ceilings;
      the faster of the two is the one (a) is held to;
  (d) this service's own HTTP path (its fast path, batcher, metrics and response bodies) with churn's
      batches answered by a canned result, no feature read and no model (loadtests/baselines/
      canned_service.py): (a)/(d) is the share of the request that scoring leaves;
  (e) a bare ASGI no-op behind BentoML's router, no FastAPI (loadtests/baselines/asgi_noop_service.py);
  (f) (a) with AUTH_MODE=on, every request carrying an API key (bentos/auth.py): what checking
      the caller costs; and, in process, the middleware's cost per request with an API key and
      with a verified bearer token (loadtests/bench_auth.py);
  (h) POST fraud-detection on (a)'s server (one server serves every family), every request one
      fixed transaction (TRANSACTION) for a customer drawn as churn's are;
  (i) the same requests to the naive design's fraud route, on (b)'s server (the FeatureService of
      the fraud version packed in the bento, fraud_v2 after `make up`, through
      `get_online_features`, its on-demand views fed the transaction; XGBoost per request);
  (j) the Open Inference Protocol's infer by id on (a)'s server, one customer_id per request;
  (k) (a) with the inference log as it was before its journal (SERVING_INFERENCE_LOG_JOURNAL=off:
      rows in memory until the next file, not chained): (a)/(k) is what numbering, chaining and
      journaling each decision before it is answered cost;
  (l) (a) with Python's collector at its default young threshold (SERVING_GC_YOUNG_THRESHOLD=700,
      against 20,000): (a)/(l) is what the threshold gains.
Before the rounds, (h) and (i) answer the same requests (the fixed transaction for 100 customers,
100 replayed transactions, an unknown customer): the results say whether their probabilities,
decisions and versions agree (`fraud_agreement`).
Every server is started first and stays up. Then, per target: a 5 s warm-up and a wait until the
server has written the warm-up's inference log. Then the latency of a lone request on the idle
servers (sequential requests), the targets taking turns in blocks of 20. Then rounds: each round takes every target in turn, in a rotated
order, first at a fixed offered rate (an open-loop generator that times each request from when it
was due, so a stall is not hidden: p50/p99), then at saturation (wrk, closed loop), so that the
machine's slow and fast stretches (the same code moved by 30% between runs here, and a no-op's p99
at the fixed rate reached 125 ms in one of them) fall on all of them. Each target's figures are its
median rounds, and each ratio the median of its per-round ratios; every round is in the results.
After each of (a)'s rounds, churn-batch calls with 1,000 customers. Before the servers, it times the feature read itself both
ways (feature_reads). Results go to loadtests/results/serving.{json,md} (serving-redis.* when
ONLINE_STORE=redis).

    python -m loadtests.bench_serving --routes fraud                  (h and i only: their servers, (a)'s and (b)'s)
    python -m loadtests.bench_serving --only a_service,h_fraud_service,i_fraud_naive --rounds 1 --seconds 3 --out /tmp/x

A run of fewer than every target writes its results only where --out says (the committed ones are
always a whole run), and skips the in-process timings unless it runs churn without --only.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core.api_keys import new_key
from core.settings import get_settings
from loadtests.bench_auth import credential_costs
from loadtests.servers import ROOT, ServerDidNotStart, free_port, start, stop
from loadtests.stall_probe import StallProbe

RESULTS = ROOT / "loadtests" / "results"
CHURN_TARGETS = ("a_service", "b_naive", "c_noop", "d_canned", "e_asgi_noop", "f_service_auth", "g_bentoml_api_noop",
                 "k_log_unjournaled", "l_gc_default")
# fraud target -> the server it is sent to: the service and the naive app each serve both routes
FRAUD_TARGETS = {"h_fraud_service": "a_service", "i_fraud_naive": "b_naive"}
# the Open Inference Protocol's infer by id (churn, one row), sent to the service beside churn-score
PROTOCOL_TARGETS = {"j_v2_service": "a_service"}
TARGETS = CHURN_TARGETS + tuple(FRAUD_TARGETS) + tuple(PROTOCOL_TARGETS)
ROUTE = "/api/v1/inference/churn-score"
BIN = Path(sys.executable).parent
# The transaction every fraud request carries: a typical one of the generator's later month (its
# median amount; its commonest category, channel and country), at a fixed time, so that the hour
# features do not move with the clock. Its device is new to every customer but C0000001. What
# scoring costs does not depend on the values (every row walks every tree to its depth).
TRANSACTION = {"amount": 39.32, "merchant_category": "groceries", "channel": "pos", "country": "GB",
               "device_id": "D0000001-0", "timestamp": "2026-10-15T13:56:49Z"}
AGREEMENT_TOLERANCE = 1e-6  # the service walks XGBoost's trees in float32 as XGBoost does (scoring/trees.py): a few ulps

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local ids = {%s}
request = function()
  return wrk.format(nil, nil, nil, '%s' .. ids[math.random(#ids)] .. '%s')
end
"""
# Appended to a WRK_SCRIPT: each wrk thread sends on a schedule (its share of a rate), whatever the
# answers: an open loop, bounded by the connections. A connection sends its next request when its
# last answer is back and the schedule has come; one the schedule wanted sooner goes at once and is
# counted behind schedule, so a run says how far short of its rate the bounded client fell.
WRK_SCHEDULE = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } wrk_timespec;
int clock_gettime(int clk_id, wrk_timespec *tp);
]]
local clock = ffi.new("wrk_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end
local interval_ms, due = %f, nil
behind = 0
delay = function()
  local now = now_ms()
  due = (due or now) + interval_ms
  if due <= now then behind = behind + 1; return 0 end
  return due - now
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function()
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("behind") end
  io.write(string.format("Sent behind schedule: %%d\\n", total))
end
"""
WRK_THREADS = 2
WORKERS = 2
# The targets, from the serving redesign: (a)/(b) throughput, (a)/(c), idle p50, p99 at the fixed
# rate, churn-batch of 1,000 per online store.
BATCH_MEDIAN_MS = {"redis": 50, "sqlite": 150}
BATCH_CALLS = 30  # churn-batch calls of 1,000 customers, spread over the rounds


@dataclass(frozen=True)
class Route:
    """A scoring route the targets are sent: its path, and the body of a request for one customer."""

    path: str
    transaction: dict | None = None  # fraud-detection: the transaction every request carries
    protocol: bool = False  # the Open Inference Protocol's infer: the id as a one-row BYTES tensor

    def body(self, customer_id: str) -> dict:
        if self.protocol:
            return {"inputs": [{"name": "customer_id", "datatype": "BYTES", "shape": [1], "data": [customer_id]}]}
        return {"customer_id": customer_id, **({"transaction": self.transaction} if self.transaction else {})}

    def around_id(self) -> tuple[str, str]:
        """The JSON body's text before and after the customer id, as the wrk script joins them."""
        if self.protocol:
            return '{"inputs":[{"name":"customer_id","datatype":"BYTES","shape":[1],"data":["', '"]}]}'
        transaction = f',"transaction":{json.dumps(self.transaction, separators=(",", ":"))}' if self.transaction else ""
        return '{"customer_id":"', f'"{transaction}}}'

    def script(self, ids: list[str]) -> str:
        """A WRK_SCRIPT sending this body, a random one of `ids` in each request."""
        return WRK_SCRIPT % (",".join(f'"{i}"' for i in ids), *self.around_id())


ROUTES = {"churn": Route(ROUTE), "fraud": Route("/api/v1/inference/fraud-detection", TRANSACTION),
          "v2": Route("/v2/models/churn/infer", protocol=True)}


def server_of(target: str) -> str:
    return {**FRAUD_TARGETS, **PROTOCOL_TARGETS}.get(target, target)


def family_of(target: str) -> str:
    """The route a target is sent: churn, fraud or v2."""
    return "fraud" if target in FRAUD_TARGETS else "v2" if target in PROTOCOL_TARGETS else "churn"


def route_of(target: str) -> Route:
    return ROUTES[family_of(target)]


def chosen(routes: str, only: str | None) -> list[str]:
    """The targets of a run, in TARGETS' order: those of `routes`, or of them those `only` names."""
    families = {name.strip() for name in routes.split(",")}
    if unknown := families - set(ROUTES):
        raise typer.BadParameter(f"unknown route {', '.join(sorted(unknown))}; known: {', '.join(ROUTES)}")
    names = [t for t in TARGETS if family_of(t) in families]
    if only:
        wanted = {name.strip() for name in only.split(",")}
        if unknown := wanted - set(TARGETS):
            raise typer.BadParameter(f"unknown target {', '.join(sorted(unknown))}; known: {', '.join(TARGETS)}")
        names = [t for t in names if t in wanted]
    if not names:
        raise typer.BadParameter("no target left: --only names none of the --routes targets")
    return names


def scheduled(script: str, rate: float) -> str:
    """`script` sending `rate` requests a second on schedule (WRK_SCHEDULE)."""
    return script + WRK_SCHEDULE % (1000 * WRK_THREADS / rate)


def wrk(port: int, script: Path, seconds: int, connections: int, route: str = ROUTE) -> dict:
    return parse_wrk(subprocess.run(
        ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}{route}"],
        capture_output=True, text=True, check=True,
    ).stdout)


def parse_wrk(out: str) -> dict:
    """Throughput, p50 and p99, the request count, and what failed, from wrk's --latency report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    behind = re.search(r"Sent behind schedule: (\d+)", out)
    return {"requests_per_s": round(rps, 1), "p50_ms": latency["50"], "p99_ms": latency["99"], "requests": total,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
            "behind_schedule": int(behind.group(1)) if behind else 0}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit], 2)


async def _open_loop(port: int, ids: list[str], rate: float, seconds: float, headers: dict | None = None,
                     route: Route = ROUTES["churn"]) -> dict:
    """Send `rate` requests a second on schedule, whatever the answers; latency counts from the due time."""
    import aiohttp

    latencies: list[float] = []
    late: list[float] = []  # how long after its due time each request left: the generator's own delay
    failures = 0
    url = f"http://127.0.0.1:{port}{route.path}"

    def body() -> dict:
        return route.body(random.choice(ids))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers=headers) as session:
        async def one(due: float) -> None:
            nonlocal failures
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            late.append(time.perf_counter() - due)
            try:
                async with session.post(url, json=body()) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
            except aiohttp.ClientError:
                failures += 1
            latencies.append(time.perf_counter() - due)

        # The generator's own garbage collector stays off while it sends (as timeit turns it off): a
        # full collection of this process's heap (115,000 objects) took 38-55 ms here, during which no
        # request goes out and no answer is read, and the route measured took the blame; the rounds
        # of a no-op whose requests left 40-90 ms late (sent_late_p99_ms) had a p99 of 58-161 ms.
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter() + 0.2
            await asyncio.gather(*(one(start + i / rate) for i in range(int(rate * seconds))))
        finally:
            gc.enable()
    latencies.sort()
    late.sort()
    return {"offered_rate": rate, "requests": len(latencies), "failures": failures,
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 2),
            "sent_late_p99_ms": round(1000 * late[int(len(late) * 0.99) - 1], 2)}


LOGGED = {"a_service", "d_canned", "f_service_auth", "k_log_unjournaled", "l_gc_default"}  # the servers that write an inference log


def settle(port: int, timeout_s: float = 60) -> float:
    """Wait until the server's inference log holds no unwritten prediction; the seconds waited."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        backlog = [float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
                   if line.startswith("fintech_inference_log_backlog_rows{")]
        if sum(backlog) == 0:
            break
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def idle_latencies(targets: dict[str, tuple[int, dict | None, Route]], ids: list[str], calls: int = 200,
                   block: int = 20) -> dict[str, dict]:
    """One request at a time on a kept-alive connection per target: what a lone caller waits. The
    targets take turns, `block` calls each, so every one meets the same stretches of the machine
    (measured one after the other, minutes apart, (j)'s p50 came out below (a)'s in one run and
    18% above it in the next)."""
    import httpx

    clients = {name: httpx.Client(timeout=30, headers=headers) for name, (_, headers, _) in targets.items()}
    times: dict[str, list[float]] = {name: [] for name in targets}
    try:
        for turn in range(-1, calls // block):  # turn -1 warms each connection, not recorded
            for name, (port, _, route) in targets.items():
                for _ in range(block if turn >= 0 else 10):
                    started = time.perf_counter()
                    clients[name].post(f"http://127.0.0.1:{port}{route.path}", json=route.body(random.choice(ids)))
                    if turn >= 0:
                        times[name].append(1000 * (time.perf_counter() - started))
    finally:
        for client in clients.values():
            client.close()
    return {name: {"calls": len(t), "p50_ms": round(statistics.median(t), 2),
                   "p99_ms": round(sorted(t)[int(len(t) * 0.99) - 1], 2)} for name, t in times.items()}


def churn_batch_times(port: int, ids: list[str], calls: int = 10, size: int = 1000) -> list[float]:
    """Milliseconds of each of `calls` churn-batch calls of `size` random customers, after one that
    warms the connection."""
    import httpx

    times = []
    with httpx.Client(timeout=60) as client:
        for i in range(calls + 1):
            body = {"customer_ids": random.sample(ids, size)}
            started = time.perf_counter()
            response = client.post(f"http://127.0.0.1:{port}/api/v1/inference/churn-batch", json=body)
            response.raise_for_status()
            if i:
                times.append(1000 * (time.perf_counter() - started))
    return times


def feature_reads(settings, ids: list[str], sizes=(1, 32, 256, 1000), repeats: int = 7) -> dict:
    """Milliseconds per customer to read the churn champion's FeatureService, side by side on the
    same store and batches: Feast's `get_online_features` + `to_dict` (what the naive design and
    this service used to call) against the service's reader (bentos/online.py), first with
    Python's collector walking the whole heap, then with the start-up heap frozen as the services
    freeze it (bentos/config.py:freeze_heap)."""
    import gc

    import bentoml

    from bentos.online import FeastReader
    from scoring.loading import from_bento

    name = from_bento(bentoml.models.get("churn:latest"), "churn").info("champion").feature_service
    reader = FeastReader(settings)
    service = reader.store.get_feature_service(name)
    if not reader.read(name, [{"customer_id": ids[0]}]).found[0]:
        raise SystemExit(f"the {settings.online_store} online store has no features for {ids[0]}: materialize it first "
                         f"(ONLINE_STORE={settings.online_store} make features)")
    ways = {"sdk": lambda rows: reader.store.get_online_features(features=service, entity_rows=rows).to_dict(
                include_event_timestamps=True),
            "reader": lambda rows: reader.read(name, rows)}
    for read in ways.values():  # the first read of each way loads the registry and the store's connection
        read([{"customer_id": c} for c in ids[:32]])
    out: dict = {"feature_service": name, "per_customer_ms": {}}
    for heap in ("collected", "frozen"):
        if heap == "frozen":
            gc.collect()
            gc.freeze()
        for size in sizes:
            times: dict[str, list[float]] = {way: [] for way in ways}
            for _ in range(repeats):  # alternate the two ways, so both see the same machine
                rows = [{"customer_id": c} for c in random.sample(ids, size)]
                for way, read in ways.items():
                    started = time.perf_counter()
                    read(rows)
                    times[way].append(1000 * (time.perf_counter() - started) / size)
            for way, values in times.items():
                out["per_customer_ms"].setdefault(f"{way}_{heap}", {})[str(size)] = round(statistics.median(values), 3)
    gc.unfreeze()
    return out


def fraud_agreement(service_port: int, naive_port: int, ids: list[str], transactions: list[dict], n: int = 100) -> dict:
    """Whether the service and the naive design give the same fraud answer to the same requests:
    the benchmark's transaction for n customers, n replayed transactions as they happened (each its
    own customer, device, country and time), and an unknown customer (both: 404)."""
    import httpx

    rng = random.Random(0)
    fraud = ROUTES["fraud"]
    bodies = [fraud.body(c) for c in rng.sample(ids, min(n, len(ids)))]
    bodies += [{"customer_id": t["customer_id"], "transaction": {k: v for k, v in t.items() if k != "customer_id"}}
               for t in rng.sample(transactions, min(n, len(transactions)))]
    bodies.append(fraud.body("UNKNOWN-bench-serving"))
    differences, disagreements, scored = [], [], 0
    with httpx.Client(timeout=30) as client:
        for body in bodies:
            service, naive = (client.post(f"http://127.0.0.1:{port}{fraud.path}", json=body) for port in (service_port, naive_port))
            same = service.status_code == naive.status_code
            if same and service.status_code == 200:
                s, b = service.json(), naive.json()
                scored += 1
                differences.append(abs(s["fraud_probability"] - b["fraud_probability"]))
                # the naive design has no rules layer: the outcomes agree where no rule hit
                same = (differences[-1] <= AGREEMENT_TOLERANCE and (s["outcome"] == b["outcome"] or bool(s["rules"]))
                        and s["threshold"] == b["threshold"] and s["model"]["version"] == b["model"]["version"])
            if not same:
                disagreements.append({"request": body, "service": [service.status_code, service.text[:300]],
                                      "naive": [naive.status_code, naive.text[:300]]})
    return {"requests": len(bodies), "scored_by_both": scored, "agreeing": len(bodies) - len(disagreements),
            "max_abs_difference": max(differences, default=0.0), "tolerance": AGREEMENT_TOLERANCE,
            "first_disagreements": disagreements[:3]}


def main(
    seconds: Annotated[int, typer.Option(help="Duration of each saturation round and of each fixed-rate one.")] = 10,
    rounds: Annotated[int, typer.Option(help="Saturation rounds: each target once per round, in turn.")] = 3,
    connections: Annotated[int, typer.Option(help="wrk connections.")] = 32,
    rate: Annotated[float, typer.Option(help="Fixed offered rate (requests/s) for the latency comparison.")] = 300.0,
    routes: Annotated[str, typer.Option(help="The routes whose targets run, comma-separated: churn (a-g), "
                                             "fraud (h, i), v2 (j: the Open Inference Protocol).")] = "churn,fraud,v2",
    only: Annotated[str | None, typer.Option(help=f"Run only these targets, comma-separated ({', '.join(TARGETS)}), "
                                                  "and print them.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the results; default loadtests/results, for a run of "
                                                  "every target only (a run of fewer writes only where this says).")] = None,
) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    names = chosen(routes, only)
    if out is None and names != list(TARGETS):
        print(f"a run of {len(names)} of the {len(TARGETS)} targets: its results are printed, and written only "
              "with --out", flush=True)
    settings = get_settings()
    features = settings.features_dir / "customer_features.parquet"
    if not features.exists():
        raise SystemExit(f"{features} is missing: run `make up` (or make features train build) first")
    table = pd.read_parquet(features, columns=["customer_id", "event_timestamp"])
    ids = table.loc[table["event_timestamp"] == table["event_timestamp"].max(), "customer_id"].tolist()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    # every target under python -O, as `make serve` and the image run the service (docs/design/decisions/python-optimize.md)
    env = {"DATA_DIR": str(settings.data_dir), "SERVING_WORKERS": str(WORKERS), "PYTHONOPTIMIZE": "1"}
    results: dict = {"config": {"seconds": seconds, "rounds": rounds, "connections": connections, "fixed_rate": rate,
                                "workers": WORKERS, "cpus": os.cpu_count(), "customers": len(ids),
                                "online_store": settings.online_store, "targets": names, "fraud_transaction": TRANSACTION}}
    if not only and "a_service" in names:
        print("feature reads: Feast SDK against the service's reader", flush=True)
        results["feature_reads"] = feature_reads(settings, ids)
        print(json.dumps(results["feature_reads"]), flush=True)
        print("credential costs: the authentication middleware in process", flush=True)
        results["credential_costs"] = credential_costs()
        print(json.dumps(results["credential_costs"]), flush=True)
    keys = work / "api_keys.json"
    key = new_key(keys, "bench-serving", ["inference"])
    # its bucket is checked on every request like any client's, but set high enough never to refuse
    unlimited = json.dumps({"bench-serving": {"inference": {"per_s": 1e9, "burst": 10**9}}})
    plain = {"AUTH_MODE": "off"}
    auth = {"AUTH_MODE": "on", "AUTH_API_KEYS_FILE": str(keys), "AUTH_RATE_LIMITS": unlimited}
    headers = {"f_service_auth": {"X-API-Key": key}}  # per server: what each of its requests carries
    bentoml = str(BIN / "bentoml")
    servers_to_start = {  # server -> its command, its ready route (None: POST churn-score), its environment
        "a_service": ([bentoml, "serve", "bentos.service:FintechAPI"], "/ready", plain),
        "b_naive": ([str(BIN / "uvicorn"), "loadtests.baselines.naive_app:create_app", "--factory", "--workers", str(WORKERS),
                     "--log-level", "warning", "--no-access-log"], None, plain),
        "c_noop": ([bentoml, "serve", "loadtests.baselines.noop_service:NoopAPI"], "/readyz", plain),
        "d_canned": ([bentoml, "serve", "loadtests.baselines.canned_service:CannedAPI"], "/ready", plain),
        "e_asgi_noop": ([bentoml, "serve", "loadtests.baselines.asgi_noop_service:AsgiNoopAPI"], "/readyz", plain),
        "f_service_auth": ([bentoml, "serve", "bentos.service:FintechAPI"], "/ready", auth),
        "g_bentoml_api_noop": ([bentoml, "serve", "loadtests.baselines.bentoml_api_noop_service:BentoApiNoop"], "/readyz", plain),
        "k_log_unjournaled": ([bentoml, "serve", "bentos.service:FintechAPI"], "/ready", {**plain, "SERVING_INFERENCE_LOG_JOURNAL": "off"}),
        "l_gc_default": ([bentoml, "serve", "bentos.service:FintechAPI"], "/ready", {**plain, "SERVING_GC_YOUNG_THRESHOLD": "700"}),
    }
    scripts = {}
    for name in names:
        scripts[name] = work / f"{name}.lua"
        scripts[name].write_text(route_of(name).script(ids) + "".join(
            f'wrk.headers["{header}"] = "{value}"\n' for header, value in headers.get(server_of(name), {}).items()))
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        # every server is up for the whole run, so each saturation round meets them all on the same machine
        for name in dict.fromkeys(server_of(t) for t in names):
            command, ready, server_env = servers_to_start[name]
            port = free_port()
            command = [*command, "--port", str(port)] + (["--host", "127.0.0.1"] if "uvicorn" in command[0] else [])
            print(f"{name}: starting on port {port}", flush=True)
            servers[name] = (_start_target(command, ready, port, ids[0], work / f"{name}.log", {**env, **server_env}), port)
        if set(FRAUD_TARGETS) <= set(names):
            from loadtests.replay import replay_transactions

            print("fraud agreement: the service and the naive design on the same requests", flush=True)
            results["fraud_agreement"] = fraud_agreement(servers["a_service"][1], servers["b_naive"][1], ids,
                                                         replay_transactions(settings.data_dir, rows=1000))
            print(json.dumps(results["fraud_agreement"]), flush=True)
        for name in names:
            port, server_headers = servers[server_of(name)][1], headers.get(server_of(name))
            wrk(port, scripts[name], 5, connections, route_of(name).path)  # warm-up, not recorded
            # the warm-up's burst leaves thousands of predictions for the inference log to write;
            # measured while it writes them, a lone request or the fixed rate times that transient
            # (a p99 of 16-24 ms over the first 15 s at 300 req/s, 8-9 ms over the next)
            settled_s = settle(port) if server_of(name) in LOGGED else 0.0
            results[name] = {"settled_s": settled_s, "fixed_rate_rounds": [], "rounds": []}
        print("idle: a lone request at a time, the targets taking turns", flush=True)
        idle = idle_latencies({name: (servers[server_of(name)][1], headers.get(server_of(name)), route_of(name))
                               for name in names}, ids)
        for name in names:
            results[name]["idle"] = idle[name]
            print(f"{name}: {json.dumps(results[name])}", flush=True)
        batch_times: list[float] = []
        for r in range(rounds):  # each round in another order, so no target always follows the same one
            for name in names[r % len(names):] + names[:r % len(names)]:
                port, server_headers, route = servers[server_of(name)][1], headers.get(server_of(name)), route_of(name)
                with StallProbe(servers[server_of(name)][0].pid) as probe:
                    fixed = asyncio.run(_open_loop(port, ids, rate, seconds, headers=server_headers, route=route))
                results[name]["fixed_rate_rounds"].append({**fixed, "machine": probe.result})
                print(f"round {r + 1} {name} at {rate:.0f} req/s: {json.dumps(results[name]['fixed_rate_rounds'][-1])}", flush=True)
                results[name]["rounds"].append(wrk(port, scripts[name], seconds, connections, route.path))
                if server_of(name) in LOGGED:  # its burst written before the next target's round
                    settle(port)
                print(f"round {r + 1} {name}: {json.dumps(results[name]['rounds'][-1])}", flush=True)
                if name == "a_service":  # churn-batch in every round too, so its calls meet the machine's stretches as well
                    batch_times += churn_batch_times(port, ids, calls=max(1, BATCH_CALLS // rounds))
        for name in names:
            results[name]["saturation"] = median_of(results[name]["rounds"], "requests_per_s", ("non_2xx", "socket_errors"))
            results[name]["fixed_rate"] = median_of(results[name]["fixed_rate_rounds"], "p99_ms", ("failures", "requests"))
        if "a_service" in names:
            results["a_service"]["churn_batch_1000"] = {
                "customers": 1000, "calls": len(batch_times), "median_ms": round(statistics.median(batch_times), 1),
                "p90_ms": round(sorted(batch_times)[int(len(batch_times) * 0.9) - 1], 1)}
            print(f"a_service churn-batch: {json.dumps(results['a_service']['churn_batch_1000'])}", flush=True)
    finally:
        for process, _ in servers.values():
            stop(process)
    results["ratios_per_round"], results["ratios"] = ratios(results, names)
    results["targets"] = met(results, names, rate, BATCH_MEDIAN_MS.get(settings.online_store, 150))
    print(render(results))
    if out is None and names != list(TARGETS):
        return
    folder = out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    stem = "serving" if settings.online_store == "sqlite" else f"serving-{settings.online_store}"
    (folder / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (folder / f"{stem}.md").write_text(render(results))
    print(f"results: {folder / stem}.{{json,md}}", flush=True)


# (numerator, denominator, digits, of what): the median of the per-round throughput ratios, or the
# ratio of the median rounds' throughput
RATIOS = (("a_service", "b_naive", 2, "rounds"), ("a_service", "c_noop", 3, "rounds"),
          ("a_service", "g_bentoml_api_noop", 3, "rounds"), ("a_service", "d_canned", 3, "rounds"),
          ("d_canned", "c_noop", 3, "medians"), ("c_noop", "e_asgi_noop", 3, "medians"), ("f_service_auth", "a_service", 3, "medians"),
          ("h_fraud_service", "i_fraud_naive", 2, "rounds"), ("h_fraud_service", "a_service", 3, "rounds"),
          ("j_v2_service", "a_service", 3, "rounds"), ("a_service", "k_log_unjournaled", 3, "rounds"),
          ("a_service", "l_gc_default", 3, "rounds"))


def ratios(results: dict, names: list[str]) -> tuple[dict, dict]:
    """Per round, (a) against every other churn target, (h) against (i) and (a), and (j) against (a):
    each pair ran minutes apart at most, on the same machine; then RATIOS, for the pairs that ran."""
    per_round = {name: [r["requests_per_s"] for r in results[name]["rounds"]] for name in names}
    pairs = [("a_service", t) for t in CHURN_TARGETS if t != "a_service"] + [("h_fraud_service", t) for t in ("i_fraud_naive", "a_service")]
    pairs.append(("j_v2_service", "a_service"))
    each = {f"{x[0]}_over_{y[0]}": [round(p / q, 3) for p, q in zip(per_round[x], per_round[y])]
            for x, y in pairs if x in names and y in names}
    medians = {}
    for x, y, digits, of in RATIOS:
        if x in names and y in names:
            ratio = statistics.median(each[f"{x[0]}_over_{y[0]}"]) if of == "rounds" else \
                results[x]["saturation"]["requests_per_s"] / results[y]["saturation"]["requests_per_s"]
            medians[f"{x[0]}_over_{y[0]}_throughput"] = round(ratio, digits)
    return each, medians


def _clean(results: dict, names: list[str]) -> bool:
    """No non-2xx, socket error or failure in any run of these targets."""
    return all(sum(r["non_2xx"] + r["socket_errors"] for r in results[k]["rounds"]) + results[k]["fixed_rate"]["failures"] == 0
               for k in names)


def met(r: dict, names: list[str], rate: float, batch_limit: float) -> dict[str, bool]:
    """The targets the run can judge, each met or not, on the exact figures, not the rounded ones shown."""
    ran, each = set(names).__contains__, r["ratios_per_round"]
    targets: dict[str, bool] = {}
    if ran("a_service") and ran("b_naive"):
        targets["a at least 2x b's throughput"] = statistics.median(each["a_over_b"]) >= 2
        targets["a's p99 at saturation no worse than b's"] = r["a_service"]["saturation"]["p99_ms"] <= r["b_naive"]["saturation"]["p99_ms"]
    if ran("a_service") and ran("c_noop") and ran("g_bentoml_api_noop"):
        # the faster of BentoML's two ways to serve a no-op
        ceiling = max(r["c_noop"]["saturation"]["requests_per_s"], r["g_bentoml_api_noop"]["saturation"]["requests_per_s"])
        targets["a at least 75% of BentoML's no-op ceiling (the faster of c and g)"] = \
            r["a_service"]["saturation"]["requests_per_s"] >= 0.75 * ceiling
    if ran("a_service"):
        service = r["a_service"]
        targets["a idle: p50 of a lone request <= 5 ms"] = service["idle"]["p50_ms"] <= 5
        targets[f"a's p99 at {rate:.0f} req/s <= 15 ms"] = service["fixed_rate"]["p99_ms"] <= 15
        targets[f"churn-batch of 1,000: median < {batch_limit} ms"] = service["churn_batch_1000"]["median_ms"] < batch_limit
    if ran("a_service") and ran("k_log_unjournaled"):
        # each decision chained and in the journal before it is answered, against the log as it was
        targets["a at least 0.95x k's throughput (the journal and the chain cost at most 5%)"] = statistics.median(each["a_over_k"]) >= 0.95
    if ran("a_service") and ran("l_gc_default"):
        targets["a at least l's throughput (the collector's young threshold at 20,000, not Python's 700)"] = \
            statistics.median(each["a_over_l"]) >= 1.0
    if churn := [k for k in names if k in CHURN_TARGETS]:
        targets["no non-2xx in any run"] = _clean(r, churn)
    fraud, naive = r.get("h_fraud_service"), r.get("i_fraud_naive")
    if fraud and naive:
        targets["h (fraud) at least 4x i's (naive fraud) throughput"] = statistics.median(each["h_over_i"]) >= 4
        targets["h's p99 at saturation no worse than i's"] = fraud["saturation"]["p99_ms"] <= naive["saturation"]["p99_ms"]
    if fraud and ran("a_service"):
        targets["h at least 0.8x a's throughput (fraud-detection against churn-score, same server)"] = \
            statistics.median(each["h_over_a"]) >= 0.8
    if fraud:
        targets["h idle: p50 of a lone fraud request <= 3 ms"] = fraud["idle"]["p50_ms"] <= 3
        targets[f"h's p99 at {rate:.0f} req/s <= 10 ms"] = fraud["fixed_rate"]["p99_ms"] <= 10
    if (v2 := r.get("j_v2_service")) and ran("a_service"):
        # no more than 10% more per request: a request's cost is the inverse of the throughput at saturation
        targets["j (v2 infer by id) at least 1/1.1 of a's throughput (churn-score, same server)"] = \
            statistics.median(each["j_over_a"]) >= 1 / 1.1
        targets["j idle: p50 of a lone v2 infer no more than 1.1x a's"] = v2["idle"]["p50_ms"] <= 1.1 * r["a_service"]["idle"]["p50_ms"]
    if v2:
        targets["v2: no non-2xx in any run (j)"] = _clean(r, ["j_v2_service"])
    if fraud_names := [k for k in names if k in FRAUD_TARGETS]:
        targets["fraud: no non-2xx in any run (h, i)"] = _clean(r, fraud_names)
    if agreement := r.get("fraud_agreement"):
        targets[f"i answers h's fraud probability (within {AGREEMENT_TOLERANCE:g}), decision and version to every "
                "check request"] = agreement["agreeing"] == agreement["requests"]
    return targets


def median_of(rounds: list[dict], by: str, summed: tuple[str, ...]) -> dict:
    """The round of median `by` (its other figures with it), with the `summed` counts of all rounds."""
    middle = sorted(rounds, key=lambda r: r[by])[len(rounds) // 2]
    return {**middle, **{count: sum(r[count] for r in rounds) for count in summed}}


def _start_target(command: list[str], ready: str | None, port: int, customer: str, log: Path, env: dict) -> subprocess.Popen:
    if ready is None:  # the naive app has no health route: its own scoring route must answer
        process = subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **env})
        try:
            _wait_for_post(port, customer)
        except SystemExit:
            stop(process)
            raise
        return process
    try:
        return start(command, port, ready, log, env)
    except ServerDidNotStart as e:
        raise SystemExit(str(e)) from e


def _wait_for_post(port: int, customer: str) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://127.0.0.1:{port}{ROUTE}", json={"customer_id": customer}, timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the naive baseline did not answer on port {port}")


NAMES = {"a_service": "(a) this service", "b_naive": "(b) naive FastAPI + Feast + XGBoost",
         "c_noop": "(c) FastAPI no-op on BentoML, same options", "d_canned": "(d) this service's HTTP path, canned scores",
         "e_asgi_noop": "(e) bare ASGI no-op on BentoML, same options",
         "f_service_auth": "(f) this service, AUTH_MODE=on (an API key)",
         "g_bentoml_api_noop": "(g) `@bentoml.api` no-op, same options",
         "h_fraud_service": "(h) this service, fraud-detection", "i_fraud_naive": "(i) naive fraud: FastAPI + Feast + XGBoost",
         "j_v2_service": "(j) this service, v2 infer by id (churn, one row)",
         "k_log_unjournaled": "(k) this service, its inference log unjournaled and unchained (SERVING_INFERENCE_LOG_JOURNAL=off)",
         "l_gc_default": "(l) this service, the collector at Python's default young threshold (SERVING_GC_YOUNG_THRESHOLD=700)"}


def _per_round(r: dict, against: str) -> str:
    """`against`'s ratios to each target, round by round (median first)."""
    return "; ".join(f"({key.rsplit('_', 1)[1]}) {round(statistics.median(v), 3)} ({', '.join(map(str, v))})"
                     for key, v in r["ratios_per_round"].items() if key.startswith(f"{against}_over_"))


def render(r: dict) -> str:
    cfg = r["config"]
    names = [key for key in NAMES if key in r]
    fraud = [key for key in names if key in FRAUD_TARGETS]
    v2 = [key for key in names if key in PROTOCOL_TARGETS]
    churn = [key for key in names if key not in FRAUD_TARGETS and key not in PROTOCOL_TARGETS]
    what = ("POST " + "; ".join(f"{route} to {', '.join(f'({k[0]})' for k in keys)}"
                                for route, keys in (("churn-score", churn), ("fraud-detection", fraud),
                                                    ("/v2/models/churn/infer (one customer_id)", v2)) if keys)
            + f", with ids drawn from {cfg['customers']:,} customers"
            + (f"; every fraud request carries the transaction `{json.dumps(cfg['fraud_transaction'])}`." if fraud else "."))
    lines = [
        "# Serving benchmark", "",
        f"One run, {cfg['cpus']} CPUs, {cfg['workers']} workers per server, {cfg['online_store']} online store, every server "
        f"up for the whole run. Saturation: wrk -t2 -c{cfg['connections']} for {cfg['seconds']} s per target, "
        f"{cfg['rounds']} rounds, each round every target in turn, each first at a fixed {cfg['fixed_rate']:.0f} req/s "
        f"(an open-loop generator) for {cfg['seconds']} s; the round of median throughput, and of median p99 at the fixed rate, "
        f"is shown. {what}", "",
        "| target | req/s at saturation | each round | p50 ms | p99 ms | non-2xx | idle p50 ms | p50 ms at fixed rate "
        "| p99 ms at fixed rate | each round | failures |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for key in names:
        s, f, idle = r[key]["saturation"], r[key]["fixed_rate"], r[key]["idle"]
        each = ", ".join(f"{x['requests_per_s']:.0f}" for x in r[key]["rounds"])
        each_fixed = ", ".join(f"{x['p99_ms']}" for x in r[key]["fixed_rate_rounds"])
        lines.append(f"| {NAMES[key]} | {s['requests_per_s']:.0f} | {each} | {s['p50_ms']} | {s['p99_ms']} | "
                     f"{s['non_2xx'] + s['socket_errors']} | {idle['p50_ms']} | {f['p50_ms']} | {f['p99_ms']} | {each_fixed} | "
                     f"{f['failures']} |")
    if all("machine" in x for key in names for x in r[key]["fixed_rate_rounds"]):
        lines += ["", "What else the fixed-rate rounds met, round by round: the longest a process asking to wake every "
                  "millisecond waited past it (loadtests/stall_probe.py: the machine), the p99 of how late the "
                  "generator sent a request (its own delay), and the server's major page faults:", ""]
        lines += [f"- {NAMES[key]}: " + "; ".join(
            f"{x['machine']['longest_ms']} ms, {x['sent_late_p99_ms']} ms, {x['machine'].get('server_major_faults', 0)}"
            for x in r[key]["fixed_rate_rounds"]) for key in names]
    if "a_service" in r:
        batch = r["a_service"]["churn_batch_1000"]
        lines += ["", f"churn-batch of {batch['customers']:,} customers: median {batch['median_ms']} ms, p90 {batch['p90_ms']} ms "
                  f"over {batch['calls']} calls."]
    for against in ("a", "h", "j"):
        if each := _per_round(r, against):
            lines += ["", f"({against}) against each target, round by round (median first): {each}."]
    if r["ratios"]:
        lines += ["", "Medians: " + ", ".join(f"({key.split('_')[0]})/({key.split('_')[2]}) = {value}"
                                              for key, value in r["ratios"].items()) + "."]
    if agreement := r.get("fraud_agreement"):
        lines += ["", f"(h) and (i) asked the same {agreement['requests']} fraud requests (the transaction above for 100 "
                  "customers, 100 replayed transactions, an unknown customer): "
                  f"{agreement['agreeing']} answered alike (status; probability within {agreement['tolerance']:g}, decision, "
                  f"threshold and version), {agreement['scored_by_both']} scored by both; largest probability difference "
                  f"{agreement['max_abs_difference']:.3g}."]
    lines += ["", "| target | met |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else 'no'} |" for k, v in r["targets"].items()]
    if auth := r.get("credential_costs"):
        lines += ["", "The authentication middleware in process (loadtests/bench_auth.py), microseconds per request through "
                  f"it over a no-op app: {auth['api_key_us']} with an API key, {auth['bearer_cached_us']} with a bearer token "
                  f"already verified, against {auth['no_auth_us']} for the no-op alone; verifying a new RS256 token "
                  f"once: {auth['first_verification_us']}."]
        if "api_key_redis_each_us" in auth:  # measured when a redis-server was at hand
            lines[-1] += (" The rate limits of those are the pod's; shared through Redis instead, an API key's request "
                          f"costs {auth['api_key_redis_each_us']} with a Lua call each, {auth['api_key_redis_lease_us']} "
                          "with the default leases (20 ms of the rate: one call per 20 requests at 1,000/s).")
    if "feature_reads" in r:
        reads = r["feature_reads"]["per_customer_ms"]
        sizes = list(next(iter(reads.values())))
        lines += ["", f"Reading `{r['feature_reads']['feature_service']}` from the {cfg['online_store']} online store, "
                  "ms per customer (median of 7 batches, the two ways alternating):", "",
                  "| way | heap | " + " | ".join(f"batch of {n}" for n in sizes) + " |",
                  "|---|---|" + "---:|" * len(sizes)]
        labels = {"sdk": "Feast `get_online_features` + `to_dict`", "reader": "the service's bulk reader (bentos/online.py)"}
        for key, row in reads.items():
            way, heap = key.rsplit("_", 1)
            lines.append(f"| {labels[way]} | {heap} | " + " | ".join(str(row[n]) for n in sizes) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    typer.run(main)
