"""The streaming path on real parts: a real redis-server holding the stream and the windows, the
consumer pushing through Feast into a copy of the session's SQLite online store, the producer and
the consumer's CLI as a user runs them."""

import os
import shutil
import signal
import subprocess
import sys
import uuid

import pandas as pd
import pytest

from core.store import open_store
from core.stream_features import BEFORE_FEATURES, STREAM_FEATURES, offline_table
from loadtests.servers import ROOT
from streaming.consumer import Consumer, StreamSettings, connect, ensure_group
from streaming.producer import events_of, produce
from tests.integration.conftest import wait_for
from training.partitions import read_transactions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own(settings, built, tmp_path_factory):
    """The session's Feast registry and online store, copied: what the consumer pushes is this module's alone."""
    folder = tmp_path_factory.mktemp("stream") / "data"
    shutil.copytree(settings.data_dir / "feast", folder / "feast")
    return settings.model_copy(update={"data_dir": folder})


@pytest.fixture(scope="module")
def later(settings, built) -> pd.DataFrame:
    """The generator's later period: transactions after every snapshot, as a live stream would bring them."""
    return pd.read_parquet(settings.data_dir / "raw" / "transactions_later.parquet")


@pytest.fixture
def stream(redis_url) -> StreamSettings:
    """A stream, group and window keys of the test's own on the session's redis-server."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    return StreamSettings(redis_url=f"redis://{redis_url}/0", stream=f"{name}:transactions", dead_letters=f"{name}:dead",
                          window_prefix=f"{name}:window:", consumer="c1", batch=200, block_ms=50)


def first_days(later: pd.DataFrame, days: float) -> pd.DataFrame:
    return later[later["timestamp"] < later["timestamp"].min() + pd.Timedelta(days=days)]


def online_stream_features(settings, customers: list[str]) -> pd.DataFrame:
    read = open_store(settings).get_online_features(features=[f"customer_stream:{f}" for f in STREAM_FEATURES],
                                                    entity_rows=[{"customer_id": c} for c in customers]).to_df()
    return read.set_index("customer_id")[STREAM_FEATURES]


def consume_all(consumer: Consumer) -> list:
    reports = []
    while (report := consumer.step()).read:
        reports.append(report)
    return reports


def test_a_day_replayed_through_the_consumer_pushes_the_offline_values_at_the_same_instants(own, later, stream):
    day = first_days(later, 1)
    client = connect(stream)
    consumer = Consumer(own, stream, client=client)  # Feast's own push, into the copied SQLite store
    produce(client, stream, events_of(day), rate=0, stamp_now=False)
    reports = consume_all(consumer)

    offline = offline_table(day).set_index("transaction_id")
    pushed = pd.concat([r.pushed.assign(as_of=r.as_of) for r in reports], ignore_index=True)
    assert sum(r.accepted for r in reports) == len(day) and len(pushed) >= day["customer_id"].nunique()
    expected = offline.loc[pushed["as_of"], STREAM_FEATURES].reset_index(drop=True)
    pd.testing.assert_frame_equal(pushed[STREAM_FEATURES], expected)  # every row, every instant, exactly
    assert (pushed["customer_id"].to_numpy() == offline.loc[pushed["as_of"], "customer_id"].to_numpy()).all()

    last = pushed.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    sample = last.index[:50].tolist()
    pd.testing.assert_frame_equal(online_stream_features(own, sample), last.loc[sample, STREAM_FEATURES],
                                  check_names=False)  # what a reader of the online store gets


def test_bad_late_and_repeated_events_are_kept_apart_with_their_reason_and_none_is_lost(own, later, stream):
    client = connect(stream)
    consumer = Consumer(own, stream, client=client, push=lambda frame: None)
    good = events_of(first_days(later, 1).head(20))
    newest = max(pd.Timestamp(e["timestamp"]) for e in good if e["customer_id"] == good[0]["customer_id"])
    bad = [
        {**good[1], "transaction_id": "X-amount", "amount": "-5"},
        {**good[1], "transaction_id": "X-category", "merchant_category": "casino"},
        {k: v for k, v in good[1].items() if k != "customer_id"} | {"transaction_id": "X-customer"},
        {**good[1], "transaction_id": "X-time", "timestamp": "yesterday"},
        {**good[0], "transaction_id": "X-late", "timestamp": (newest - pd.Timedelta(hours=2)).isoformat()},
        good[3],  # sent twice
    ]
    produce(client, stream, good + bad, rate=0, stamp_now=False)
    reports = consume_all(consumer)
    assert sum(r.read for r in reports) == len(good) + len(bad)
    assert (sum(r.accepted for r in reports), sum(r.duplicates for r in reports)) == (len(good), 1)
    assert (sum(r.rejected for r in reports), sum(r.late for r in reports)) == (4, 1)
    dead = {fields[b"transaction_id"].decode(): fields[b"reason"].decode() for _, fields in client.xrange(stream.dead_letters)}
    assert dead == {"X-amount": "amount is negative or zero", "X-category": "merchant_category is not in the contract",
                    "X-customer": "customer_id is missing", "X-time": "timestamp does not parse",
                    "X-late": "late: 7200 s behind the customer's newest event (lateness 300 s)"}
    assert client.xpending(stream.stream, stream.group)["pending"] == 0  # every entry acknowledged


def consumer_cli(settings, stream: StreamSettings, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "PYTHONOPTIMIZE": "1",
           **{f"STREAM_{k.upper()}": str(v) for k, v in stream.model_dump().items() if v is not None}}
    return subprocess.Popen([sys.executable, "-m", "streaming", "consume", "--metrics-port", "0", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_consumer_killed_mid_stream_and_started_again_loses_no_event_and_counts_none_twice(own, later, stream):
    days = first_days(later, 4)
    client = connect(stream)
    ensure_group(client, stream)
    produce(client, stream, events_of(days), rate=0, stamp_now=False)
    first = consumer_cli(own, stream)
    group = lambda: client.xinfo_groups(stream.stream)[0]
    wait_for(lambda: first.poll() is None and (group()["entries-read"] or 0) >= len(days) // 3, "a third of the stream read", 120)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    left_pending = group()["pending"]
    again = consumer_cli(own, stream, "--idle-exit-s", "3")  # the same consumer name: its pending entries come first
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    assert group()["pending"] == 0 and group()["lag"] == 0

    offline = offline_table(days).sort_values(["customer_id", "event_timestamp", "transaction_id"])
    newest = offline.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    for customer, events in days.groupby("customer_id"):  # every event in its window, once
        held = {t.decode() for t in client.zrange(stream.window_prefix + customer, 0, -1)}
        in_window = events[events["timestamp"] > events["timestamp"].max() - pd.Timedelta(days=1, seconds=300)]
        assert held == set(in_window["transaction_id"]), customer
    sample = newest.index[:80].tolist()
    pd.testing.assert_frame_equal(online_stream_features(own, sample), newest.loc[sample, STREAM_FEATURES], check_names=False)
    print(f"killed with {left_pending} events pending; started again, it consumed the rest; {len(days)} events, "
          f"{days['customer_id'].nunique()} customers, every window and pushed value as offline")


def test_fraud_v2_reads_online_what_its_training_set_read_offline_for_the_same_transaction(settings, own, stream):
    """The stream replayed up to an instant of the history; then each customer's next transaction
    read through fraud_v2 online, as the service reads it, and through the training set's join."""
    from training.pipeline import transactions_with_features

    history = read_transactions(settings.transactions_by_customer_dir)
    instant = history["timestamp"].max() - pd.Timedelta(days=5)
    # every window a next transaction within a day can read starts at most two days before the instant
    replayed = history[(history["timestamp"] >= instant - pd.Timedelta(days=2)) & (history["timestamp"] < instant)]
    upcoming = history[(history["timestamp"] >= instant) & (history["timestamp"] < instant + pd.Timedelta(days=1))]
    scored = upcoming.sort_values(["timestamp", "transaction_id"]).drop_duplicates("customer_id").sort_values("customer_id")
    client = connect(stream)
    produce(client, stream, events_of(replayed), rate=0, stamp_now=False)
    consume_all(Consumer(own, stream, client=client))

    feature_store = open_store(own)
    request = ["amount", "merchant_category", "channel", "country", "device_id"]
    rows = [{"customer_id": r.customer_id, **{k: getattr(r, k) for k in request}, "transaction_time": r.timestamp.value // 10**9}
            for r in scored.itertuples()]
    online = feature_store.get_online_features(features=feature_store.get_feature_service("fraud_v2"), entity_rows=rows).to_df()
    offline = transactions_with_features(feature_store, scored, "fraud_v2").sort_values("customer_id")
    assert len(online) == len(offline) == len(scored)
    pd.testing.assert_frame_equal(online[BEFORE_FEATURES].astype(float).reset_index(drop=True),
                                  offline[BEFORE_FEATURES].reset_index(drop=True))
    seen = offline["seconds_since_last_txn"].notna()
    assert seen.sum() >= 20 and (~seen).sum() >= 20  # both kinds: a previous transaction within the day, and none


def test_a_stopped_consumer_leaves_the_stream_view_stale_while_transactions_keep_coming(own, later, stream):
    """While the consumer drains the stream it says so, and every customer's stream row is as fresh
    as that, a quiet customer's too. Stopped while transactions keep coming, the view ages from its
    last drained read, and a family with a limit on it finds each row stale (core of the service's
    freshness: the real reader, the real store, the real consumer)."""
    import time

    from bentos.online import CAUGHT_UP_READ_S, FeastReader
    from core.feature_sets import SERVICE_FEATURES
    from scoring.base import Freshness, ModelInfo, assemble

    client = connect(stream)
    consumer = Consumer(own, stream.model_copy(update={"caught_up_every_s": 0.0}), client=client)
    day = first_days(later, 0.5)
    busy, quiet = day["customer_id"].iloc[0], "C0000002"
    reader, info = FeastReader(own), ModelInfo("fraud", "2", "champion", "fraud_v2")
    transaction = {"amount": 20.0, "merchant_category": "groceries", "channel": "pos", "country": "GB", "device_id": "d",
                   "transaction_time": int(time.time())}
    requests = [{"customer_id": c, "request_data": transaction} for c in (busy, quiet)]
    freshness = Freshness({"customer_stream": 2.0})

    def stream_ages() -> tuple[list[float], list[list[str]]]:
        a = assemble(reader, info, SERVICE_FEATURES["fraud_v2"], requests, freshness=freshness)
        return a.ages["customer_stream"].tolist(), a.stale

    produce(client, stream, events_of(day.head(300)), rate=0, stamp_now=True)
    consume_all(consumer)
    consumer.step()  # a read that drains the stream: the consumer says so
    ages, stale = stream_ages()
    assert max(ages) < 2.0 and stale == [[], []], ages  # the quiet customer's row is complete as of then too

    produce(client, stream, events_of(day.iloc[300:600]), rate=0, stamp_now=True)  # the consumer is stopped
    time.sleep(2.5)
    ages, stale = stream_ages()
    assert min(ages) >= 2.5 and stale == [["customer_stream"], ["customer_stream"]], ages

    consume_all(consumer)  # back: it drains what came and says so
    consumer.step()
    time.sleep(CAUGHT_UP_READ_S)  # the reader reads the consumer's word again at most this often
    assert max(stream_ages()[0]) < 2.0
