"""The stream consumer: transactions from a Redis Stream to fresh features in the online store.

    python -m streaming consume                 (make consume)

Each batch of events, read with a consumer group:
  1. events with the same transaction id as another in the batch are one event (the producer sent it twice);
  2. each is checked against the data contract (core/contract.py, without the label): a bad one
     goes to the dead-letter stream with its reason;
  3. an event more than `lateness_s` older than its customer's newest one is late: it goes to the
     dead-letter stream too, counted; the others, in or out of order, join their customer's window;
  4. each customer's window lives in Redis: a sorted set of its last day's transaction ids by
     event time, and a hash of their amounts, devices and countries. An event whose transaction id
     the window holds (delivered again: a consumer killed before its acknowledgement) changes
     nothing; it still pushes its customer's features again;
  5. the features as of each touched customer's newest event (core/stream_features.py) are
     pushed to the online store through Feast's PushSource, in one write;
  6. only then are the batch's entries acknowledged. A consumer killed anywhere before that leaves
     them pending: it reads them again when it comes back, or another consumer claims them once
     they have been idle `claim_idle_ms`.

A read of new events that comes back with fewer than a batch has drained the stream: at most every
`caught_up_every_s`, the consumer then pushes the view's row of CAUGHT_UP_ID, stamped with the
read's time. The service takes every customer's stream row as complete as of that time (a quiet
customer's row is not stale; when the consumer stops, every row ages from the last one), so the
stream view's age is the consumer's lag. Events handed to another consumer of the group and still
in its hands at that instant are the exception: a batch's time at most.

The windows are in Redis, not in the process: consumers can come and go (an autoscaler on the lag).
Two consumers that score one customer at the same instant may push in either order; the next
event of that customer pushes the full window again.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.stream_features import CAUGHT_UP_ID, DAY_S, STREAM_FEATURES, Event, features_at, in_order

log = logging.getLogger(__name__)
PUSH_SOURCE = "customer_stream_push"
SEPARATOR = "\x1f"  # between the fields an event keeps in its window: amount, device, country
EVENT_FIELDS = ["transaction_id", "customer_id", "timestamp", "amount", "merchant_id", "merchant_category", "channel",
                "country", "device_id"]


class StreamSettings(BaseSettings):
    """Where the stream is and how it is consumed (environment, prefix STREAM_)."""

    model_config = SettingsConfigDict(env_prefix="STREAM_", extra="ignore")

    redis_url: str = Field("redis://localhost:6379/0", description="The Redis server that holds the streams and the windows.")
    redis_password_file: Path | None = Field(None, description="A file holding that server's password (kept out of the URL).")
    stream: str = Field("fintech:transactions", description="The stream of transactions.")
    dead_letters: str = Field("fintech:transactions:dead", description="Where bad and late events go, with their reason.")
    group: str = Field("stream-features", description="The consumer group.")
    consumer: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
                          description="This consumer's name in the group (default: host and process id).")
    batch: int = Field(500, ge=1, description="At most this many events per read.")
    block_ms: int = Field(100, ge=1, description="How long a read waits for events.")
    lateness_s: float = Field(300.0, ge=0, description=(
        "An event up to this much older than its customer's newest one still joins the window; an older one is late."))
    claim_idle_ms: int = Field(30_000, ge=1, description="Events pending this long with another consumer are claimed.")
    window_prefix: str = Field("fintech:window:", description="Key prefix of the customers' windows.")
    max_len: int = Field(5_000_000, ge=1000, description="The producer trims the stream to about this many events.")
    caught_up_every_s: float = Field(1.0, ge=0, description=(
        "At most this often, a consumer that drained the stream says so in the online store (the stream view's "
        "freshness, which the service reads); 0: after every read that drained it."))


@dataclass
class BatchReport:
    """What one batch did, for the logs, the metrics and the tests."""

    read: int = 0
    duplicates: int = 0
    rejected: int = 0
    late: int = 0
    accepted: int = 0
    pushed: pd.DataFrame | None = None  # the rows pushed, one per customer
    as_of: list[str] = field(default_factory=list)  # per pushed row: the transaction id of the customer's newest event
    freshness_s: list[float] = field(default_factory=list)  # per accepted event: pushed, minus its event time


def connect(stream: StreamSettings):
    import redis

    password = stream.redis_password_file.read_text().strip() if stream.redis_password_file else None
    return redis.Redis.from_url(stream.redis_url, password=password, decode_responses=False)


def ensure_group(client, stream: StreamSettings) -> None:
    """The consumer group, from the start of the stream, created with the stream if need be."""
    import redis

    try:
        client.xgroup_create(stream.stream, stream.group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


def event_of(transaction_id: bytes, score: float, fields: bytes) -> Event:
    """An event of a window: its id and time from the sorted set, the rest from the hash beside it."""
    amount, device_id, country = fields.decode().split(SEPARATOR)
    return Event(score, transaction_id.decode(), float(amount), device_id, country)


def decode(entries: list) -> pd.DataFrame:
    """The events of stream entries, as read (strings), with their entry id; missing fields are None."""
    rows = []
    for entry_id, fields in entries:
        row = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        rows.append({name: row.get(name) for name in EVENT_FIELDS} | {"entry_id": entry_id.decode()})
    return pd.DataFrame(rows, columns=[*EVENT_FIELDS, "entry_id"])


class Consumer:
    """One member of the consumer group. `push(frame)` writes feature rows to the online store
    (Feast's push by default); tests may watch what it is given."""

    def __init__(self, settings, stream: StreamSettings, client=None, push=None):
        from core.contract import validate

        self.stream, self.validate = stream, validate
        self.client = client or connect(stream)
        ensure_group(self.client, stream)
        if push is None:
            from feast.data_source import PushMode

            from core.store import open_store

            feature_store = open_store(settings, online_only=True)
            push = lambda frame: feature_store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)
        self.push = push
        self._own_pending = True  # after a restart, this consumer's unacknowledged entries come first
        self._drained = False  # the last read was of new events and came back with fewer than a batch
        self._caught_up_at = 0.0

    def read(self) -> list:
        """This consumer's pending entries (once, at start), then any another consumer left idle
        too long, then new ones."""
        s, c = self.stream, self.client
        if self._own_pending:
            entries = c.xreadgroup(s.group, s.consumer, {s.stream: "0"}, count=s.batch)
            entries = entries[0][1] if entries else []
            if entries:
                return entries
            self._own_pending = False
        claimed = c.xautoclaim(s.stream, s.group, s.consumer, min_idle_time=s.claim_idle_ms, start_id="0-0", count=s.batch)
        if claimed[1]:
            return [e for e in claimed[1] if e[1]]  # an entry trimmed from the stream comes back empty
        entries = c.xreadgroup(s.group, s.consumer, {s.stream: ">"}, count=s.batch, block=s.block_ms)
        entries = entries[0][1] if entries else []
        self._drained = len(entries) < s.batch
        return entries

    def step(self) -> BatchReport:
        """Read one batch and process it; an empty report when nothing came. A read that drained
        the stream is said in the online store once its batch is pushed (`caught_up`)."""
        started = time.time()
        self._drained = False
        entries = self.read()
        report = self.process(entries) if entries else BatchReport()
        if self._drained and started - self._caught_up_at >= self.stream.caught_up_every_s:
            self.caught_up(started)
        return report

    def caught_up(self, at: float) -> None:
        """Push the stream view's CAUGHT_UP_ID row, stamped `at`: every event read before then is pushed.
        Its windows end at `at` (a row of no value at all is not written by Feast's push)."""
        row = {"customer_id": CAUGHT_UP_ID, **{name: math.nan for name in STREAM_FEATURES}, "last_txn_time": at}
        self.push(pd.DataFrame([row]).assign(event_timestamp=pd.Timestamp(datetime.fromtimestamp(at, UTC))))
        self._caught_up_at = at

    def process(self, entries: list) -> BatchReport:
        report = BatchReport(read=len(entries))
        frame = decode(entries)
        repeated = frame["transaction_id"].notna() & frame["transaction_id"].duplicated(keep="first")
        checked = self.validate(frame[~repeated], labelled=False)
        dead = [(row, row.pop("reject_reason")) for row in checked.rejected.to_dict("records")]
        entry_of = dict(zip(frame["transaction_id"], frame["entry_id"]))
        arrival = {transaction_id: i for i, transaction_id in enumerate(frame["transaction_id"])}
        accepted = checked.accepted.assign(arrival=checked.accepted["transaction_id"].map(arrival)).sort_values("arrival")
        touched, added, seen, late = self._windows(accepted)
        dead += [({**row, "entry_id": entry_of.get(row["transaction_id"])}, why) for row, why in late]
        report.duplicates, report.rejected, report.late = int(repeated.sum()) + seen, len(checked.rejected), len(late)
        report.accepted = len(added)
        if touched:
            report.pushed, report.as_of, pushed_at = self._push(touched)
            report.freshness_s = [pushed_at - e.time for e in added]
        self._dead_letter(dead)
        self.client.xack(self.stream.stream, self.stream.group, *[e[0] for e in entries])
        return report

    def _key(self, customer: str) -> str:
        return self.stream.window_prefix + customer

    def _windows(self, accepted: pd.DataFrame) -> tuple[list[str], list[Event], int, list[tuple[dict, str]]]:
        """Add the batch's events (in the order they arrived) to their customers' windows: the
        customers touched (also by events their window already holds: a batch delivered again
        pushes again), the events added, how many the windows already held, and the late events
        with their reasons. An event is late when it is older than its customer's newest event
        so far (in the window or earlier in the batch) by more than the lateness."""
        by_customer: dict[str, list[tuple[Event, dict]]] = defaultdict(list)
        for row in accepted.to_dict("records"):
            event = Event(row["timestamp"].timestamp(), row["transaction_id"], float(row["amount"]), row["device_id"], row["country"])
            by_customer[row["customer_id"]].append((event, row))
        customers = list(by_customer)
        with self.client.pipeline(transaction=False) as pipe:
            for customer in customers:
                pipe.zrange(self._key(customer), -1, -1, withscores=True)
                pipe.zmscore(self._key(customer), [e.transaction_id for e, _ in by_customer[customer]])
            replies = pipe.execute()
        touched, added, seen, late = [], [], 0, []
        keep_s = DAY_S + self.stream.lateness_s
        with self.client.pipeline(transaction=False) as pipe:
            for customer, newest, held in zip(customers, replies[0::2], replies[1::2]):
                watermark, fresh = newest[0][1] if newest else -math.inf, []
                for (event, row), score in zip(by_customer[customer], held):
                    behind = watermark - event.time
                    if score is not None:
                        seen += 1
                    elif behind > self.stream.lateness_s:
                        why = f"late: {behind:.0f} s behind the customer's newest event (lateness {self.stream.lateness_s:.0f} s)"
                        late.append((row, why))
                    else:
                        fresh.append(event)
                        watermark = max(watermark, event.time)
                if not fresh and all(score is None for score in held):
                    continue  # only late events
                touched.append(customer)
                added += fresh
                key = self._key(customer)
                if fresh:
                    pipe.zadd(key, {e.transaction_id: e.time for e in fresh})
                    pipe.hset(key + ":events", mapping={e.transaction_id: SEPARATOR.join((repr(e.amount), e.device_id, e.country))
                                                        for e in fresh})
                pipe.zremrangebyscore(key, "-inf", f"({watermark - keep_s}")  # out of every window, late ones included
                pipe.expire(key, int(keep_s) + 3600)
                pipe.expire(key + ":events", int(keep_s) + 3600)
            pipe.execute()
        return touched, added, seen, late

    def _push(self, customers: list[str]) -> tuple[pd.DataFrame, list[str], float]:
        """The features as of each customer's newest event, from its whole window, pushed in one
        write. The fields of events trimmed from a window are dropped afterwards."""
        with self.client.pipeline(transaction=False) as pipe:
            for customer in customers:
                pipe.zrange(self._key(customer), 0, -1, withscores=True)
                pipe.hgetall(self._key(customer) + ":events")
            replies = pipe.execute()
        rows, as_of, stale = [], [], {}
        for customer, window, fields in zip(customers, replies[0::2], replies[1::2]):
            events = in_order(event_of(transaction_id, score, fields[transaction_id]) for transaction_id, score in window)
            rows.append({"customer_id": customer, **features_at(events, [len(events) - 1])[0]})
            as_of.append(events[-1].transaction_id)
            if len(fields) > len(window):
                stale[customer] = set(fields) - {transaction_id for transaction_id, _ in window}
        now = time.time()
        frame = pd.DataFrame(rows, columns=["customer_id", *STREAM_FEATURES]).assign(
            event_timestamp=pd.Timestamp(datetime.fromtimestamp(now, UTC)))
        self.push(frame)
        pushed_at = time.time()
        if stale:
            with self.client.pipeline(transaction=False) as pipe:
                for customer, transaction_ids in stale.items():
                    pipe.hdel(self._key(customer) + ":events", *transaction_ids)
                pipe.execute()
        return frame, as_of, pushed_at

    def _dead_letter(self, dead: list[tuple[dict, str]]) -> None:
        if not dead:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for row, reason in dead:
                fields = {k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                          for k, v in row.items() if k != "arrival"}
                pipe.xadd(self.stream.dead_letters, {**fields, "reason": reason})
            pipe.execute()
