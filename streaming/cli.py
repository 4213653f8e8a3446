"""Command line of the streaming path: `python -m streaming --help`.

    python -m streaming produce [FILE] --rate 1000     # replay transactions as live events (make stream)
    python -m streaming consume                         # stream -> windows -> online store (make consume)

Both read the stream's settings from the environment (STREAM_REDIS_URL, STREAM_STREAM, ...; see
streaming/consumer.py), and the consumer the data folder's settings (DATA_DIR, ONLINE_STORE) for
the Feast store it pushes to.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from core.settings import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Streaming features: replay a stream, consume it.")
log = logging.getLogger("streaming")
EXIT_NO_STREAM = 3  # the Redis server does not answer
FRESHNESS_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0)


@app.callback()
def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("feast", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _stream_or_exit(stream):
    import redis

    from streaming.consumer import connect

    client = connect(stream)
    try:
        client.ping()
    except redis.RedisError as e:
        typer.secho(f"error: the Redis server at {stream.redis_url} does not answer ({e}); is it running, and is "
                    "STREAM_REDIS_URL its address?", fg="red", err=True)
        raise typer.Exit(EXIT_NO_STREAM) from e
    return client


@app.command()
def produce(
    transactions: Annotated[Path | None, typer.Argument(help=(
        "A transactions file (Parquet or CSV, the data contract's columns) [default: the generator's later "
        "period, DATA_DIR/raw/transactions_later.parquet]."))] = None,
    rate: Annotated[float, typer.Option(min=0, help="Events per second (0: as fast as the server takes them).")] = 1000.0,
    limit: Annotated[int | None, typer.Option(min=1, help="Send at most this many events.")] = None,
    timestamps: Annotated[str, typer.Option(help="now: stamp each event when it is sent; kept: the file's own times.")] = "now",
) -> None:
    """Replay a transactions file as live events on the stream, in time order, at a set rate."""
    from tqdm import tqdm

    from core.contract import ContractError, read_table
    from streaming.consumer import StreamSettings
    from streaming.producer import events_of
    from streaming.producer import produce as send

    if timestamps not in ("now", "kept"):
        raise typer.BadParameter("is 'now' or 'kept'", param_hint="--timestamps")
    settings, stream = get_settings(), StreamSettings()
    path = transactions or settings.data_dir / "raw" / "transactions_later.parquet"
    if not path.exists():
        typer.secho(f"error: {path} does not exist (make data writes the later period; or name a file)", fg="red", err=True)
        raise typer.Exit(2)
    try:
        frame = read_table(path)
    except ContractError as e:
        typer.secho(f"error: {path}: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    missing = [c for c in ("transaction_id", "customer_id", "timestamp") if c not in frame.columns]
    if missing:
        typer.secho(f"error: {path} has no column {', '.join(missing)}", fg="red", err=True)
        raise typer.Exit(2)
    events = events_of(frame.head(limit) if limit else frame)
    client = _stream_or_exit(stream)
    with tqdm(total=len(events), desc="events", unit="event") as bar:
        sent = send(client, stream, events, rate, stamp_now=timestamps == "now", progress=bar.update)
    log.info("sent %d events from %s to %s at %s", sent, path, stream.stream, f"{rate:g}/s" if rate else "full speed")


@app.command()
def consume(
    metrics_port: Annotated[int, typer.Option(help="Port of the Prometheus /metrics endpoint (0: none).")] = 9108,
    max_events: Annotated[int | None, typer.Option(help="Stop after this many events (default: run until stopped).")] = None,
    idle_exit_s: Annotated[float | None, typer.Option(help="Stop after this long without an event.")] = None,
) -> None:
    """Consume the stream: check each event, keep each customer's windows, push the features."""
    from prometheus_client import start_http_server

    from streaming.consumer import Consumer, StreamSettings

    settings, stream = get_settings(), StreamSettings()
    client = _stream_or_exit(stream)
    consumer = Consumer(settings, stream, client=client)
    if metrics_port:
        start_http_server(metrics_port)
    m = metrics()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append("SIGTERM"))
    log.info("consumer %s of group %s on %s (%s): pushing to the %s online store", stream.consumer, stream.group,
             stream.stream, stream.redis_url, settings.online_store)
    done, last_event, last_lag = 0, time.monotonic(), 0.0
    while not stopping and (max_events is None or done < max_events):
        report = consumer.step()
        now = time.monotonic()
        if report.read:
            done += report.read
            last_event = now
            for outcome in ("accepted", "duplicates", "rejected", "late"):
                m["events"].labels(outcome).inc(getattr(report, outcome))
            for seconds in report.freshness_s:
                m["freshness"].observe(seconds)
        elif idle_exit_s is not None and now - last_event > idle_exit_s:
            break
        if now - last_lag > 1.0:
            export_lag(client, stream, m)
            last_lag = now
    log.info("consumer %s stopped after %d events%s", stream.consumer, done, f" ({stopping[0]})" if stopping else "")


_METRICS: dict = {}


def metrics() -> dict:
    from prometheus_client import Counter, Gauge, Histogram

    if not _METRICS:
        _METRICS.update(
            events=Counter("fintech_stream_events", "Stream events by outcome: accepted, duplicates (delivered again), "
                           "rejected (dead-lettered by the contract), late (dead-lettered, past the lateness).", ["outcome"]),
            freshness=Histogram("fintech_stream_freshness_seconds", "From an event's time to its features in the online store.",
                                buckets=FRESHNESS_BUCKETS),
            lag=Gauge("fintech_stream_lag", "Events on the stream not yet delivered to the consumer group."),
            pending=Gauge("fintech_stream_pending", "Events delivered to the group and not yet acknowledged."),
            dead=Gauge("fintech_stream_dead_letters", "Events on the dead-letter stream."),
        )
    return _METRICS


def export_lag(client, stream, m: dict) -> None:
    for group in client.xinfo_groups(stream.stream):
        if group["name"].decode() == stream.group:
            m["lag"].set(group.get("lag") or 0)
            m["pending"].set(group["pending"])
    m["dead"].set(client.xlen(stream.dead_letters))
