"""Streaming benchmark: freshness and throughput of the stream consumer, with the service answering
fraud-detection beside it, in one run on this machine.

    python -m loadtests.bench_stream [--customers 2000] [--rate 1000] [--seconds 60]     (make bench-stream)

In a temporary folder: synthetic data, features and models (the pipeline), a redis-server of its
own holding the stream, the windows and the Feast online store, `bentoml serve` on that store
(2 workers), and the consumer (`python -O -m streaming consume`, one process: one core at most).
  1. At a fixed rate: the later period's transactions go on the stream at `rate` events/s for
     `seconds`, stamped when sent, while a client asks fraud-detection `fraud_rps` times a second.
     The lag is sampled every half second; freshness (event time to the features written in the
     online store) comes from the consumer's own histogram.
  2. At its maximum: with the consumer stopped, `burst` events go on the stream; the consumer is
     started again and timed until the lag is back to zero (no fraud traffic).
Results: loadtests/results/stream.{json,md}.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from core.histograms import quantile
from core.settings import get_settings
from loadtests.servers import ROOT, free_port, redis_server, start, stop

RESULTS = ROOT / "loadtests" / "results"
BIN = Path(sys.executable).parent


def consumer_metrics(port: int) -> dict:
    """The consumer's counters and its freshness buckets, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict = {"buckets": [], "events": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fintech_stream_freshness_seconds_bucket":
                out["buckets"].append((float(sample.labels["le"]), sample.value))
            elif sample.name == "fintech_stream_events_total":
                out["events"][sample.labels["outcome"]] = sample.value
    out["buckets"].sort()
    return out


def fraud_load(url: str, transactions: list[dict], rps: float, stop_flag: threading.Event, answers: list) -> None:
    """fraud-detection at `rps` requests a second, each timed from when it was due."""
    with httpx.Client(timeout=10) as client:
        started, sent = time.monotonic(), 0
        while not stop_flag.is_set():
            due = started + sent / rps
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            transaction = dict(transactions[sent % len(transactions)])
            customer = transaction.pop("customer_id")
            try:
                status = client.post(f"{url}/api/v1/inference/fraud-detection",
                                     json={"customer_id": customer, "transaction": transaction}).status_code
            except httpx.HTTPError:
                status = 0
            answers.append((status, time.monotonic() - due))
            sent += 1


def main(
    customers: Annotated[int, typer.Option(help="Synthetic customers of the data built for the run.")] = 2000,
    rate: Annotated[float, typer.Option(help="Events per second of the fixed-rate phase.")] = 1000.0,
    seconds: Annotated[float, typer.Option(help="Length of the fixed-rate phase.")] = 60.0,
    fraud_rps: Annotated[float, typer.Option(help="fraud-detection requests per second meanwhile.")] = 100.0,
    burst: Annotated[int, typer.Option(help="Events queued for the maximum-throughput phase.")] = 60_000,
) -> None:
    from core.contract import read_table
    from loadtests.replay import replay_transactions
    from rollout.import_models import FAMILIES, import_family
    from streaming.consumer import StreamSettings, connect
    from streaming.producer import events_of, produce
    from training.pipeline import build_features, make_data, train_all

    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    redis_process, redis_port = redis_server(work)
    processes = []
    try:
        settings = get_settings(data_dir=work / "data", n_customers=customers, online_store="redis",
                                redis_url=f"127.0.0.1:{redis_port}")
        env = {"DATA_DIR": str(settings.data_dir), "ONLINE_STORE": "redis", "REDIS_URL": settings.redis_url,
               "MLFLOW_TRACKING_URI": settings.tracking_uri, "BENTOML_HOME": str(work / "bentoml"), "AUTH_MODE": "off",
               "PYTHONOPTIMIZE": "1", "NUMBA_CACHE_DIR": str(work / "numba"), "STREAM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
        os.environ.update({k: env[k] for k in ("BENTOML_HOME", "MLFLOW_TRACKING_URI")})
        built_at = time.monotonic()
        make_data(settings, progress=False)
        build_features(settings, progress=False)
        train_all(settings, progress=False)
        for name in FAMILIES:
            import_family(name, "champion", settings.tracking_uri)
        built_s = time.monotonic() - built_at

        port, metrics_port = free_port(), free_port()
        server = start([str(BIN / "bentoml"), "serve", "bentos.service:FintechAPI", "--host", "127.0.0.1", "--port", str(port)],
                       port, "/ready", work / "serve.log", env)
        processes.append(server)
        consumer_command = [sys.executable, "-O", "-m", "streaming", "consume", "--metrics-port", str(metrics_port)]
        consumer = start(consumer_command, metrics_port, "/metrics", work / "consume.log", {**env, "STREAM_CONSUMER": "bench"})
        processes.append(consumer)

        stream = StreamSettings(redis_url=env["STREAM_REDIS_URL"])
        client = connect(stream)
        events = events_of(read_table(settings.data_dir / "raw" / "transactions_later.parquet"))
        needed = int(rate * seconds)
        fixed = (events * (needed // len(events) + 1))[:needed]  # the later period again if it is short
        for i, event in enumerate(fixed):
            fixed[i] = {**event, "transaction_id": f"{event['transaction_id']}-r{i // len(events)}"}
        lag_samples: list[int] = []
        stop_flag, answers = threading.Event(), []

        def sample_lag():
            while not stop_flag.is_set():
                group = client.xinfo_groups(stream.stream)
                lag_samples.append(int((group[0].get("lag") or 0) + group[0]["pending"]) if group else 0)
                time.sleep(0.5)

        threads = [threading.Thread(target=sample_lag),
                   threading.Thread(target=fraud_load, args=(f"http://127.0.0.1:{port}", replay_transactions(settings.data_dir),
                                                             fraud_rps, stop_flag, answers))]
        for thread in threads:
            thread.start()
        sent_at = time.monotonic()
        produce(client, stream, fixed, rate)
        produce_s = time.monotonic() - sent_at
        while (group := client.xinfo_groups(stream.stream)[0]) and ((group.get("lag") or 0) + group["pending"]) > 0:
            time.sleep(0.2)
        stop_flag.set()
        for thread in threads:
            thread.join()
        at_rate = consumer_metrics(metrics_port)

        stop(consumer)
        processes.remove(consumer)
        queued = [{**e, "transaction_id": f"{e['transaction_id']}-b{i // len(events)}"}
                  for i, e in enumerate((events * (burst // len(events) + 1))[:burst])]
        produce(client, stream, queued, rate=0)
        drained_at = time.monotonic()
        consumer = start(consumer_command, metrics_port, "/metrics", work / "consume2.log", {**env, "STREAM_CONSUMER": "bench"})
        processes.append(consumer)
        started_s = time.monotonic() - drained_at
        burst_lag = []
        while (group := client.xinfo_groups(stream.stream)[0]) and (left := (group.get("lag") or 0) + group["pending"]) > 0:
            burst_lag.append(left)
            time.sleep(0.2)
        drain_s = time.monotonic() - drained_at - started_s
        at_max = consumer_metrics(metrics_port)

        fresh = at_rate["buckets"]
        within_1s = dict(fresh).get(1.0, 0.0) / fresh[-1][1] if fresh and fresh[-1][1] else None
        statuses = [s for s, _ in answers]
        delays = sorted(d for _, d in answers)
        results = {
            "machine": {"cpus": os.cpu_count()}, "customers": customers, "built_s": round(built_s, 1),
            "fixed_rate": {
                "events": needed, "offered_rate": rate, "achieved_send_rate": round(needed / produce_s, 1),
                "freshness_p50_s": quantile(fresh, 0.5), "freshness_p99_s": quantile(fresh, 0.99),
                "share_fresh_within_1s": within_1s, "max_lag": max(lag_samples, default=0),
                "mean_lag": sum(lag_samples) / max(len(lag_samples), 1), "events_by_outcome": at_rate["events"],
                "fraud_requests": len(answers), "fraud_ok": statuses.count(200),
                "fraud_p99_s_from_due": delays[int(0.99 * (len(delays) - 1))] if delays else None},
            "maximum": {"events": burst, "drain_s": round(drain_s, 2), "events_per_s": round(burst / drain_s, 1),
                        "consumer_start_s": round(started_s, 1), "max_lag": max(burst_lag, default=0),
                        "events_by_outcome": at_max["events"]},
        }
    finally:
        for process in processes:
            stop(process)
        redis_process.terminate()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps(results, indent=2))
    f, m = results["fixed_rate"], results["maximum"]
    (RESULTS / "stream.md").write_text("\n".join([
        "# Streaming benchmark", "",
        f"{customers:,} synthetic customers; redis-server holds the stream, the windows and the online store; "
        f"one consumer process; `bentoml serve` (2 workers) answering fraud-detection at {fraud_rps:g}/s meanwhile.", "",
        "| phase | events | rate | freshness p50 | freshness p99 | within 1 s | max lag |",
        "|---|---|---|---|---|---|---|",
        f"| fixed rate | {f['events']:,} | {f['achieved_send_rate']:,.0f}/s sent | {f['freshness_p50_s']:.3f} s | "
        f"{f['freshness_p99_s']:.3f} s | {f['share_fresh_within_1s']:.2%} | {f['max_lag']:,} |",
        f"| maximum | {m['events']:,} | {m['events_per_s']:,.0f}/s consumed | | | | {m['max_lag']:,} |", "",
        f"fraud-detection meanwhile: {f['fraud_ok']:,} of {f['fraud_requests']:,} answered 200, p99 "
        f"{f['fraud_p99_s_from_due'] * 1000:.1f} ms from when each was due.", "",
        "Freshness is from an event's time (stamped when sent) to its customer's features written to the online "
        "store, from the consumer's histogram (buckets: the quantiles are interpolated within them, as Prometheus does).",
        ""]))
    print((RESULTS / "stream.md").read_text())


if __name__ == "__main__":
    typer.run(main)
