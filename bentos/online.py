"""Online features from the Feast store the pipeline materialized (SQLite or Redis), read in bulk.

A FeatureService made only of stored feature views (churn, segment) is read in one round trip
per batch, whatever the number of views and customers:
  - Redis: one HMGET per customer of exactly the service's fields, all in one pipeline (Feast keeps
    one hash per customer, every view's features in it);
  - SQLite: one query over the service's view tables (Feast keeps one row per customer and feature).
Keys, field names and table names are Feast's own (its key serialisation, its field hashing, its
table naming). The values are Feast's serialised `Value` protos; a Float64 one is always nine
bytes (a tag, then the little-endian double), so a column of them is decoded by numpy at once
instead of one proto at a time (`decode_column`); any other type goes through the proto.
A test holds the result equal to `get_online_features` on real SQLite and Redis stores.

A service with on-demand feature views (fraud) is read the same way: its stored views, and the
stored views its on-demand views take as sources (the customer's risk profile; for fraud_v2, the
stream's row), in the same one round trip; then each on-demand view's own Python function, the one
Feast's registry holds and runs (core/realtime.py, core/stream_features.py), is called once on the
whole batch with those values and the request's fields. The same code as in training, without
`get_online_features`, which spent milliseconds a call converting values to protos and back.

Each view's event times come back with its features (`<view>__ts`): how old each row's features
are. The stream's view is complete as of the consumer's last drained read (its CAUGHT_UP_ID row,
read at most every CAUGHT_UP_READ_S), which stands for every customer's row when it is later than theirs.

A store that answers but refuses one service's read (SQLite: no table for one of its views) raises
FeaturesUnreadable for that service alone; the store is not taken for down.

When the store does not answer (down, unreachable, slower than the timeout), a read raises
StoreUnavailable naming the store; for `retry_s` after that, reads fail at once without trying, so
an outage costs each batch nothing but its 503. The next read after that window tries the store
again: it comes back by itself. The Redis client neither retries nor backs off inside a read (its
default sleeps up to seconds, on the event loop); the caller's retry is the one that counts.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from itertools import chain

import numpy as np
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Float64
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import RedisError

from bentos.metrics import metrics, observe_many
from core.settings import Settings
from core.store import open_store
from core.stream_features import CAUGHT_UP_ID, STREAM_VIEW
from scoring.base import TS_SUFFIX, FeaturesUnreadable, OnlineFeatures, StoreUnavailable

PROBE_FEATURE = "customer_activity:days_since_last_txn"
JOIN_KEY = "customer_id"
DOUBLE_TAG = 0x29  # field 5 (double_val), wire type 1 (64-bit): how every serialised Float64 Value starts
DOUBLE_ROW = np.dtype([("tag", "u1"), ("value", "<f8")])
# An empty Value (Feast's "no value": the stream's NaNs are stored so) stands in the hex as nine zero
# bytes, tag 0, so a view holding some still reads a customer at a time; it decodes to NaN
NO_VALUE_HEX = "00" * DOUBLE_ROW.itemsize
# Feast's SQLite store keeps event times as epoch seconds (older versions: as text)
EPOCH_SECONDS = ("CASE typeof(event_ts) WHEN 'integer' THEN event_ts "
                 "ELSE CAST(strftime('%s', event_ts) AS INTEGER) END")


@dataclass(frozen=True)
class ViewRead:
    view: object  # feast.FeatureView
    features: tuple[str, ...]

    @cached_property
    def floats(self) -> tuple[str, ...]:
        """The features stored as Float64, which SQLite reads a customer at a time (`float_rows`)."""
        return tuple(f.name for f in self.view.features if f.name in self.features and f.dtype == Float64)


@dataclass(frozen=True)
class OnDemandRun:
    """An on-demand view of a service: its function, what it reads, what the service takes of it."""
    udf: Callable[[dict], dict]  # dict of equal-length lists in, the same out (Feast's python mode)
    inputs: tuple[str, ...]  # features of its source views
    request: tuple[str, ...]  # fields of the request
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class ServicePlan:
    reads: list[ViewRead]  # the stored views read: the service's own, and its on-demand views' sources
    features: tuple[str, ...]  # the stored features the service returns
    views: tuple[str, ...]  # the stored views those come from: a customer is known when one has its row
    on_demand: list[OnDemandRun]

    @cached_property
    def floats(self) -> set[str]:
        return {name for read in self.reads for name in read.floats}


STORE_ERRORS = (RedisError, sqlite3.Error, OSError)
CAUGHT_UP_READ_S = 0.5


class FeastReader:
    """One store read per batch of rows, for one FeatureService."""

    def __init__(self, settings: Settings, timeout_s: float | None = None, retry_s: float = 0.0):
        self.store = open_store(settings, redis_timeout_s=timeout_s, online_only=True)
        self.where = f"redis at {settings.redis_url.split(',')[0]}" if settings.online_store == "redis" else \
            f"sqlite under {settings.data_dir}"
        self.retry_s = retry_s
        self._down_since: datetime | None = None
        self._error = ""
        self._retry_at = 0.0
        if settings.online_store == "redis":
            self._no_client_retries()
        self._services: dict = {}
        self._plans: dict[str, ServicePlan] = {}
        self._fields: dict[str, list[bytes]] = {}  # per service: its Redis hash fields, features then view times
        self._caught_up_read = (-math.inf, 0)  # when the stream's caught-up row was last read, and its time

    def _service(self, name: str):
        if name not in self._services:
            self._services[name] = self.store.get_feature_service(name)
        return self._services[name]

    def features_of(self, name: str) -> list[str]:
        """Every feature a FeatureService serves, on-demand ones included (from Feast's registry:
        the online store is not read)."""
        return [f.name for p in self._service(name).feature_view_projections for f in p.features]

    def _plan(self, name: str) -> ServicePlan:
        """What reading a service takes: each stored view once, with every feature the service or
        one of its on-demand views needs of it."""
        if name not in self._plans:
            on_demand = {v.name: v for v in self.store.list_on_demand_feature_views()}
            wanted: dict[str, dict[str, None]] = {}  # per stored view, the features read, in order, once each
            features, views, runs = [], [], []
            for projection in self._service(name).feature_view_projections:
                names = [f.name for f in projection.features]
                if projection.name not in on_demand:
                    features += names
                    views.append(projection.name)
                    wanted.setdefault(projection.name, {}).update(dict.fromkeys(names))
                    continue
                view = on_demand[projection.name]
                inputs = []
                for source in view.source_feature_view_projections.values():
                    needed = [f.name for f in source.features]
                    wanted.setdefault(source.name, {}).update(dict.fromkeys(needed))
                    inputs += needed
                request = [f.name for source in view.source_request_sources.values() for f in source.schema]
                runs.append(OnDemandRun(view.feature_transformation.udf, tuple(inputs), tuple(request), tuple(names)))
            reads = [ViewRead(self.store.get_feature_view(view), tuple(names)) for view, names in wanted.items()]
            self._plans[name] = ServicePlan(reads, tuple(features), tuple(views), runs)
        return self._plans[name]

    def _no_client_retries(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = self.store._get_provider().online_store._get_client(self.store.config.online_store)
        if isinstance(client, redis.Redis):  # connects lazily: nothing is opened here
            client.set_retry(Retry(NoBackoff(), 0))

    def read(self, feature_service: str, rows: list[dict]) -> OnlineFeatures:
        """Feature values per row, whether the store knows each row's customer, and event times
        (for the feature-age metric). StoreUnavailable when the store does not answer."""
        if self._down_since is not None and time.monotonic() < self._retry_at:
            raise StoreUnavailable(f"the online store ({self.where}) has not answered since "
                                   f"{self._down_since:%Y-%m-%d %H:%M:%S} UTC: {self._error}")
        try:
            features = self._read(feature_service, rows)
        except sqlite3.Error as e:
            if e.sqlite_errorcode == sqlite3.SQLITE_ERROR:  # the statement, not the database: "no such table"
                raise FeaturesUnreadable(f"the online store ({self.where}) cannot serve {feature_service!r}: {e} "
                                         "(a feature view applied but never materialized?)") from e
            raise self._failed(e) from e
        except STORE_ERRORS as e:
            raise self._failed(e) from e
        self._down_since = None
        return features

    def _failed(self, error: Exception) -> StoreUnavailable:
        self._error = f"{type(error).__name__}: {error}"[:300]
        self._down_since = self._down_since or datetime.now(UTC)
        self._retry_at = time.monotonic() + self.retry_s
        return StoreUnavailable(f"the online store ({self.where}) did not answer: {self._error}")

    def _read(self, feature_service: str, rows: list[dict]) -> OnlineFeatures:
        plan = self._plan(feature_service)
        columns, stamps = self._read_stored(feature_service, plan.reads, [row[JOIN_KEY] for row in rows])
        if STREAM_VIEW in stamps and (caught_up := self._caught_up(feature_service, plan)) > 0:
            # every row is complete as of the consumer's last drained read (streaming/consumer.py)
            stamps[STREAM_VIEW] = np.maximum(stamps[STREAM_VIEW], caught_up)
        found = np.zeros(len(rows), dtype=bool)
        for view in plan.views:
            found |= stamps[view] > 0
        values = {name: columns[name] for name in plan.features}
        # every view read, the on-demand views' sources too (fraud_v2's stream): how old each is
        values |= {view + TS_SUFFIX: column for view, column in stamps.items()}
        for run in plan.on_demand:
            inputs = {name: as_list(columns[name], name in plan.floats) for name in run.inputs}
            inputs |= {name: [row.get(name) for row in rows] for name in run.request}
            computed = run.udf(inputs)
            values |= {name: np.array(computed[name], dtype=float) for name in run.outputs}
        features = OnlineFeatures(values, found)
        observe_age(feature_service, features)
        return features

    def _caught_up(self, feature_service: str, plan: ServicePlan) -> int:
        """The event time of the stream view's CAUGHT_UP_ID row (0: none), read again at most every
        CAUGHT_UP_READ_S: the consumer writes it at most every second, and one read of it per batch
        cost a tenth of a fraud_v2 request (every column of the batch sliced)."""
        at, value = self._caught_up_read
        if time.monotonic() - at >= CAUGHT_UP_READ_S:
            stream = [read for read in plan.reads if read.view.name == STREAM_VIEW]
            _, stamps = self._read_stored(f"{feature_service}#{CAUGHT_UP_ID}", stream, [CAUGHT_UP_ID])
            value = int(stamps[STREAM_VIEW][0])
            self._caught_up_read = (time.monotonic(), value)
        return value

    def _read_stored(self, feature_service: str, plan: list[ViewRead], customer_ids: list[str]) -> tuple[dict, dict]:
        """Per feature its values, per view its event times (0: no row), one position per id."""
        unique = list(dict.fromkeys(customer_ids))
        version = self.store.config.entity_key_serialization_version
        keys = [entity_key(c, version) for c in unique]
        if self.store.config.online_store.type == "redis":
            columns, stamps = self._from_redis(feature_service, plan, keys)
        else:
            columns, stamps = self._from_sqlite(plan, keys)
        if len(unique) < len(customer_ids):  # repeated customers: one read, then spread back
            position = {c: i for i, c in enumerate(unique)}
            rows = np.array([position[c] for c in customer_ids])
            columns = {name: column[rows] if isinstance(column, np.ndarray) else [column[i] for i in rows]
                       for name, column in columns.items()}
            stamps = {name: column[rows] for name, column in stamps.items()}
        return columns, stamps

    def _from_redis(self, feature_service: str, plan: list[ViewRead], keys: list[bytes]):
        from feast.infra.online_stores.helpers import _mmh3

        online_store, config = self.store._get_provider().online_store, self.store.config
        names = [name for read in plan for name in read.features]
        if feature_service not in self._fields:
            self._fields[feature_service] = [_mmh3(f"{read.view.name}:{name}") for read in plan for name in read.features] + [
                f"_ts:{read.view.name}".encode() for read in plan]
        fields = self._fields[feature_service]
        project = config.project.encode()
        replies = hmget_each(online_store._get_client(config.online_store), [key + project for key in keys], fields)
        by_field = list(zip(*replies)) if replies else [() for _ in fields]
        columns = dict(zip(names, decode_columns(by_field[:len(names)])))
        stamps = {read.view.name: np.array([timestamp_seconds(b) for b in by_field[len(names) + k]], dtype=np.int64)
                  for k, read in enumerate(plan)}
        return columns, stamps

    def _sqlite_tables(self, plan: list[ViewRead]) -> list[str]:
        from feast.infra.online_stores.sqlite import _quote_id, _table_id

        config = self.store.config
        versioning = config.registry.enable_online_feature_view_versioning
        return [_quote_id(_table_id(config.project, read.view, versioning)) for read in plan]

    def _from_sqlite(self, plan: list[ViewRead], keys: list[bytes]):
        """A view's Float64 features by customer (`float_rows`, the usual case), its others row by row."""
        config = self.store.config
        connection = self.store._get_provider().online_store._get_conn(config)
        tables = self._sqlite_tables(plan)
        columns: dict = {}
        stamps: dict = {}
        for read, table in zip(plan, tables):
            floats = read.floats
            view = float_rows(connection, table, floats, keys) if floats else None
            others = read if view is None else ViewRead(read.view, tuple(f for f in read.features if f not in floats))
            if view is not None:
                columns.update(view[0])
                stamps[read.view.name] = view[1]
            if others.features:  # text and integer features (fraud's profile), or a customer missing a float
                other_columns, other_stamps = self._from_sqlite_by_row(connection, [others], [table], keys)
                columns.update(other_columns)
                seconds = other_stamps[read.view.name]
                stamps[read.view.name] = np.maximum(stamps[read.view.name], seconds) if view is not None else seconds
        return columns, stamps

    def _from_sqlite_by_row(self, connection, plan: list[ViewRead], tables: list[str], keys: list[bytes]):
        """One row per customer and feature, any value type."""
        marks = ",".join("?" * len(keys))
        query = " UNION ALL ".join(f"SELECT {k}, entity_key, feature_name, value, {EPOCH_SECONDS} "
                                   f"FROM {table} WHERE entity_key IN ({marks})" for k, table in enumerate(tables))
        rows = connection.execute(query, keys * len(plan)).fetchall() if keys else []
        position = {key: i for i, key in enumerate(keys)}
        blobs = {name: [None] * len(keys) for read in plan for name in read.features}
        stamps = {read.view.name: np.zeros(len(keys), dtype=np.int64) for read in plan}
        views = [read.view.name for read in plan]
        for view, key, name, blob, seconds in rows:
            i = position[key]
            column = blobs.get(name)
            if column is not None:
                column[i] = blob
            stamps[views[view]][i] = seconds or 0
        return dict(zip(blobs, decode_columns(list(blobs.values())))), stamps

    def ping(self) -> bool:
        """The store answers: one feature of a customer that need not exist (tried even while reads
        fail fast, so readiness says what the store does now)."""
        try:
            self.store.get_online_features(features=[PROBE_FEATURE], entity_rows=[{JOIN_KEY: "__readiness_probe__"}])
        except STORE_ERRORS as e:
            raise StoreUnavailable(f"the online store ({self.where}) did not answer: {type(e).__name__}: {e}"[:300]) from e
        return True


def float_rows(connection, table: str, features: tuple[str, ...], keys: list[bytes]) -> tuple[dict, np.ndarray] | None:
    """One view's features of every customer in `keys`, read one row per customer, or None when a
    value is neither a nine-byte Float64 nor empty (the caller then reads row by row).

    Feast's table has a row per customer and feature; turning 60,000 of them into Python objects
    was most of a 1,000-customer read. Here SQLite joins each customer's rows into one: their
    feature names, and their values in the same order, hex-encoded. Every customer's list of names
    is checked against the first's (SQLite does not promise an order to group_concat), so the
    values of all customers decode at once."""
    read = f"feature_name IN ({','.join('?' * len(features))})"  # the view's other features may be of any type
    rows = connection.execute(
        f"SELECT entity_key, group_concat(CASE WHEN {read} THEN feature_name END, ','), "
        f"group_concat(CASE WHEN {read} THEN (CASE length(value) WHEN 0 THEN '{NO_VALUE_HEX}' ELSE hex(value) END) END, ''), "
        f"max({EPOCH_SECONDS}) "
        f"FROM {table} WHERE entity_key IN ({','.join('?' * len(keys))}) GROUP BY entity_key",
        [*features, *features, *keys]).fetchall() if keys else []
    seconds = np.zeros(len(keys), dtype=np.int64)
    values = np.full((len(features), len(keys)), np.nan)
    if rows:
        found, names, hexes, stamps = zip(*rows)
        if names[0] is None:  # a customer with none of these features: row by row
            return None
        layout = names[0].split(",")
        width = 2 * DOUBLE_ROW.itemsize * len(layout)
        if any(n != names[0] for n in names) or any(len(h) != width for h in hexes) or sorted(layout) != sorted(features):
            return None
        decoded = np.frombuffer(bytes.fromhex("".join(hexes)), dtype=DOUBLE_ROW).reshape(len(rows), len(layout))
        empty = decoded["tag"] == 0
        if not (empty | (decoded["tag"] == DOUBLE_TAG)).all():
            return None
        position = {key: i for i, key in enumerate(keys)}
        at = np.array([position[key] for key in found])
        numbers = np.where(empty, np.nan, decoded["value"])
        values[:, at] = numbers[:, [layout.index(name) for name in features]].T
        seconds[at] = [s or 0 for s in stamps]
    return dict(zip(features, values)), seconds


@lru_cache(maxsize=64)
def _hmget_parts(fields: tuple[bytes, ...]) -> tuple[bytes, bytes]:
    """The RESP encoding of `HMGET <key> <fields...>` around the key: every command of a read names
    the same fields, so they are encoded once (hiredis packing each command whole cost 6.6 ms of a
    1,000-customer read)."""
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
    return head, b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)


def pack_hmgets(keys: list[bytes], fields: list[bytes]) -> bytes:
    """One HMGET of `fields` per key, RESP-encoded as hiredis would, in one buffer."""
    head, tail = _hmget_parts(tuple(fields))
    parts = []
    for key in keys:
        parts += (head, b"$%d\r\n" % len(key), key, b"\r\n", tail)
    return b"".join(parts)


def hmget_each(client, keys: list[bytes], fields: list[bytes]) -> list[list[bytes | None]]:
    """HMGET of the same fields from every key, in one round trip. On a plain Redis client the
    commands go in one write and the replies are read back in order: redis-py's pipeline spends
    about 20 µs of Python per command packing and parsing, a third of a 1,000-customer read. A
    Redis Cluster client gets redis-py's pipeline, which splits by shard."""
    import redis

    if not isinstance(client, redis.Redis):
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, fields)
            return pipe.execute()
    if not keys:
        return []
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([pack_hmgets(keys, fields)])
        return [connection.read_response() for _ in keys]
    except BaseException:
        connection.disconnect()  # replies may be left unread on it: never hand it out again as is
        raise
    finally:
        pool.release(connection)


@lru_cache(maxsize=1 << 17)
def entity_key(customer_id: str, serialization_version: int) -> bytes:
    """A customer's key as Feast stores it (its own serialisation), kept for the next read: building
    it costs about as much as decoding the customer's 48 features."""
    return serialize_entity_key(EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=customer_id)]),
                                entity_key_serialization_version=serialization_version)


def decode_columns(columns: list) -> list[np.ndarray | list]:
    """`decode_column` of each column, in one numpy call when every value is a Float64: per
    column, the calls cost more than the values for the few customers of a scoring batch."""
    try:  # every value there, the usual case: joined without a list of them first
        joined = b"".join(chain.from_iterable(columns))
        present = range(sum(len(column) for column in columns))
    except TypeError:  # a None among them
        present = [b for column in columns for b in column if b is not None]
        joined = b"".join(present)
    if not columns or len(joined) != DOUBLE_ROW.itemsize * len(present):
        return [decode_column(list(column)) for column in columns]
    decoded = np.frombuffer(joined, dtype=DOUBLE_ROW)
    if not (decoded["tag"] == DOUBLE_TAG).all():
        return [decode_column(list(column)) for column in columns]
    table = np.full((len(columns), len(columns[0])), np.nan)
    if len(present) == table.size:
        table.flat[:] = decoded["value"]
    else:
        table[np.array([[b is not None for b in column] for column in columns], dtype=bool)] = decoded["value"]
    return list(table)


def decode_column(blobs: list[bytes | None]) -> np.ndarray | list:
    """Serialised Feast Values of one feature, one per row (None: no value). Float64 columns come
    back as a float array with NaN for no value, all at once; any other type as a list of Python
    values (None for no value, and for an explicit null)."""
    present = [b for b in blobs if b is not None]
    joined = b"".join(present)
    if len(joined) == DOUBLE_ROW.itemsize * len(present):
        decoded = np.frombuffer(joined, dtype=DOUBLE_ROW)
        if (decoded["tag"] == DOUBLE_TAG).all():
            if len(present) == len(blobs):
                return decoded["value"].copy()
            column = np.full(len(blobs), np.nan)
            column[np.array([b is not None for b in blobs])] = decoded["value"]
            return column
    return [None if b is None else python_value(Value.FromString(b)) for b in blobs]


def as_list(column: np.ndarray | list, is_float: bool) -> list:
    """A column as an on-demand view's function takes it: Python values, NaN or None for none. A
    column of another type with no value at all decodes as NaNs (nothing says its type): Nones."""
    if not isinstance(column, np.ndarray):
        return column
    return column.tolist() if is_float else [None] * len(column)


def python_value(value: Value | None):
    """A stored scalar as Python, as the SDK's conversion gives it; None when missing, and also
    for an explicit null, which the SDK turns into 0."""
    kind = value.WhichOneof("val") if value is not None else None
    return None if kind is None or kind == "null_val" else getattr(value, kind)


@lru_cache(maxsize=4096)
def timestamp_seconds(blob: bytes | None) -> int:
    """A view's event time as Feast's Redis store keeps it (a serialised Timestamp); 0 for none.
    Kept for the next read: one materialization stamps every customer of a view alike, so a batch
    holds a few distinct times."""
    return Timestamp.FromString(blob).seconds if blob else 0


def observe_age(feature_service: str, features: OnlineFeatures) -> None:
    """Age of each feature view read, per row that has one (0 stands for "no row": an unknown
    customer)."""
    now = time.time()
    for key, column in features.values.items():
        if key.endswith(TS_SUFFIX) and key != JOIN_KEY + TS_SUFFIX:
            stamps = np.asarray(column, dtype=float)
            observe_many(metrics().feature_age.labels(feature_service, key.removesuffix(TS_SUFFIX)), now - stamps[stamps > 0])
