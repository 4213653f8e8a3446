"""Replay a transactions file as live events on the stream, at a set rate.

    python -m streaming produce [FILE] --rate 1000        (make stream)

Events go in time order, one stream entry each, the contract's columns as strings (no label: a
live transaction has none yet). With `--timestamps now` (the default) each event is stamped with
the moment it is sent, so its freshness downstream is measured from then; `--timestamps kept`
sends the file's own times, to compare with offline features at the same instants.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd

from streaming.consumer import EVENT_FIELDS, StreamSettings

TICK_S = 0.01  # events are sent in small bursts this far apart, to hold the rate
MAX_PIPELINE = 5000  # events per round trip, at most


def events_of(transactions: pd.DataFrame) -> list[dict[str, str]]:
    ordered = transactions.sort_values(["timestamp", "transaction_id"], kind="stable")
    stamps = pd.to_datetime(ordered["timestamp"], utc=True).map(lambda t: t.isoformat())
    return [dict(zip(EVENT_FIELDS, row)) for row in zip(*(
        stamps if name == "timestamp" else ordered[name].astype(str) for name in EVENT_FIELDS))]


def produce(client, stream: StreamSettings, events: list[dict[str, str]], rate: float, stamp_now: bool = True,
            progress: Callable[[int], None] | None = None) -> int:
    """Send `events` at `rate` per second (0: as fast as possible); how many were sent."""
    started, sent = time.monotonic(), 0
    while sent < len(events):
        due = len(events) if rate <= 0 else int((time.monotonic() - started) * rate) + 1
        due = min(due, len(events), sent + MAX_PIPELINE)
        if due <= sent:
            time.sleep(TICK_S)
            continue
        now = datetime.now(UTC).isoformat()
        with client.pipeline(transaction=False) as pipe:
            for event in events[sent:due]:
                pipe.xadd(stream.stream, {**event, "timestamp": now} if stamp_now else event,
                          maxlen=stream.max_len, approximate=True)
            pipe.execute()
        if progress is not None:
            progress(due - sent)
        sent = due
    return sent
