"""The service's bulk feature reader against Feast's own `get_online_features`, on a real SQLite
store and a real Redis one: the same values for every feature, customer and store, so the
faster read cannot bring skew."""

import shutil
import sqlite3

import numpy as np
import pytest

from bentos.online import TS_SUFFIX, FeastReader
from core.realtime import OUTPUT_FEATURES as REQUEST_TIME_FEATURES
from core.stream_features import BEFORE_FEATURES
from scoring.base import FeaturesUnreadable
from tests.integration.conftest import apply_unmaterialized_churn_service
from training import store

STORED_SERVICES = ("churn_v1", "segment_v1")
FRAUD_SERVICES = ("fraud_v1", "fraud_v2")


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def reader(request, built, settings, table):
    if request.param == "sqlite":
        return FeastReader(settings)
    redis_settings = settings.model_copy(update={"online_store": "redis", "redis_url": request.getfixturevalue("redis_url")})
    store.apply(redis_settings)
    store.materialize(store.open_store(redis_settings), table["event_timestamp"].min(), table["event_timestamp"].max())
    return FeastReader(redis_settings)


@pytest.fixture(scope="module")
def customers(table) -> list[str]:
    latest = table[table["event_timestamp"] == table["event_timestamp"].max()]
    return latest["customer_id"].sample(60, random_state=3).tolist()


def sdk_read(reader: FeastReader, service: str, rows: list[dict]) -> dict[str, list]:
    return reader.store.get_online_features(features=reader.store.get_feature_service(service), entity_rows=rows).to_dict(
        include_event_timestamps=True)


@pytest.mark.integration
@pytest.mark.parametrize("service", STORED_SERVICES)
def test_stored_views_read_the_same_values_as_the_sdk(reader, customers, service):
    ids = customers + ["C_NOT_A_CUSTOMER", customers[0], customers[5]]  # an unknown one and repeats
    rows = [{"customer_id": c} for c in ids]
    ours, theirs = reader.read(service, rows), sdk_read(reader, service, rows)
    features = [k for k in theirs if k != "customer_id" and not k.endswith(TS_SUFFIX)]
    assert features and sorted(k for k in ours.values if not k.endswith(TS_SUFFIX)) == sorted(features)
    for name in features:  # every feature of these services is a Float64: NaN where the SDK says None
        assert isinstance(ours.values[name], np.ndarray), name
        expected = np.array([np.nan if v is None else v for v in theirs[name]], dtype=float)
        np.testing.assert_array_equal(ours.values[name], expected, err_msg=name)
    found = [any(theirs[name][i] is not None for name in features) for i in range(len(ids))]
    assert ours.found.tolist() == found and found[len(customers)] is False and all(found[:len(customers)])


@pytest.mark.integration
@pytest.mark.parametrize("service", STORED_SERVICES)
def test_event_times_are_each_views_as_the_sdk_gives_them(reader, customers, service):
    rows = [{"customer_id": c} for c in customers[:10]] + [{"customer_id": "C_NOT_A_CUSTOMER"}]
    ours, theirs = reader.read(service, rows), sdk_read(reader, service, rows)
    projections = reader.store.get_feature_service(service).feature_view_projections
    for projection in projections:
        view_times = list(ours.values[projection.name + TS_SUFFIX])
        for feature in projection.features:
            assert view_times == theirs[feature.name + TS_SUFFIX], (projection.name, feature.name)
        assert view_times[-1] == 0 and all(t > 0 for t in view_times[:-1])


def fraud_requests(reader: FeastReader, customers: list[str]) -> list[dict]:
    """Transactions that take every branch of the fraud services' on-demand views: a country,
    device and category the customer has used and ones it has not; a stream row a minute old, a
    day and a minute old (too old to count), and newer than the transaction; an unknown customer
    (no profile, no stream row); an integer amount; the same customer twice."""
    stored = reader.store.get_online_features(
        features=["customer_risk_profile:countries_seen", "customer_risk_profile:devices_seen",
                  "customer_risk_profile:categories_seen", "customer_risk_profile:home_country",
                  "customer_stream:last_txn_time"],
        entity_rows=[{"customer_id": c} for c in customers]).to_dict()
    with_stream = [i for i, t in enumerate(stored["last_txn_time"]) if t is not None]
    assert len(with_stream) >= 20, "the store should hold stream rows for most customers"
    requests = []
    for n, i in enumerate(with_stream[:24]):
        last = int(stored["last_txn_time"][i])
        familiar = n % 2 == 0
        seen = {name: (stored[name][i] or "").split("|")[0] for name in ("countries_seen", "devices_seen", "categories_seen")}
        requests.append({"customer_id": customers[i], "amount": [250.0, 12, 0.5][n % 3],
                         "merchant_category": seen["categories_seen"] if familiar else "travel",
                         "channel": ["online", "pos", "atm"][n % 3],
                         "country": (stored["home_country"][i] or "GB") if familiar else "ZZ",
                         "device_id": seen["devices_seen"] if familiar else "a-new-device",
                         "transaction_time": last + [60, 86_400 + 60, -60, 3_600][n % 4]})
    unknown = {**requests[0], "customer_id": "C_NOT_A_CUSTOMER"}
    return requests + [unknown, requests[1]]


@pytest.mark.integration
@pytest.mark.parametrize("service", FRAUD_SERVICES)
def test_fraud_services_read_and_compute_the_same_values_as_the_sdk(reader, customers, service):
    """Stored views and on-demand ones (the request-time features, fraud_v2's stream view), every
    value as `get_online_features` gives it: the reader calls the views' own functions in process."""
    rows = fraud_requests(reader, customers)
    ours, theirs = reader.read(service, rows), sdk_read(reader, service, rows)
    features = [k for k in theirs if k != "customer_id" and not k.endswith(TS_SUFFIX)]
    assert sorted(k for k in ours.values if not k.endswith(TS_SUFFIX)) == sorted(features)
    assert set(REQUEST_TIME_FEATURES) <= set(features)
    for name in features:
        expected = np.array([np.nan if v is None else v for v in theirs[name]], dtype=float)
        np.testing.assert_array_equal(np.asarray(ours.values[name], dtype=float), expected, err_msg=name)
    stored = [name for name in features if name not in REQUEST_TIME_FEATURES and name not in BEFORE_FEATURES]
    found = [any(theirs[name][i] is not None for name in stored) for i in range(len(rows))]
    assert ours.found.tolist() == found and found[-2] is False and all(found[:-2])
    alone = reader.read(service, rows[-2:-1])  # a batch of unknown customers only: no value of any type
    assert alone.found.tolist() == [False]
    for name in features:
        assert np.asarray(alone.values[name], dtype=float)[0] == pytest.approx(
            np.asarray(ours.values[name], dtype=float)[-2], nan_ok=True), name
    if service == "fraud_v2":  # the stream rule: a row counts a minute and an hour after, not a day after or before
        gaps = ours.values["seconds_since_last_txn"][:24]
        assert np.isfinite(gaps[0::4]).all() and np.isnan(gaps[1::4]).all() and np.isnan(gaps[2::4]).all()


@pytest.fixture(scope="module")
def own_registry(request, reader, settings, tmp_path_factory):
    """The reader's kind of store with the session's Feast registry and SQLite store copied (a Redis
    store stays the shared one): definitions applied to it are this module's alone."""
    folder = tmp_path_factory.mktemp("reader") / "data"
    shutil.copytree(settings.data_dir / "feast", folder / "feast")
    kind = reader.store.config.online_store.type
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else settings.redis_url
    return FeastReader(settings.model_copy(update={"data_dir": folder, "online_store": kind, "redis_url": redis_url}))


@pytest.mark.integration
def test_a_service_over_a_view_never_materialized_knows_no_customer_and_the_store_stays_up(own_registry, customers):
    service = apply_unmaterialized_churn_service(own_registry.store)
    rows = [{"customer_id": c} for c in customers[:10]]
    unread = own_registry.read(service, rows)
    assert unread.found.tolist() == [False] * 10 and all(np.isnan(v).all() for k, v in unread.values.items()
                                                          if not k.endswith(TS_SUFFIX))
    assert own_registry.read("churn_v1", rows).found.all()


@pytest.mark.integration
def test_a_view_whose_sqlite_table_is_missing_fails_its_service_alone(own_registry, customers):
    """A registry applied from elsewhere than the online store it names: the store answers and says
    the table is not there, which is not an outage (no fail-fast for the other services)."""
    if own_registry.store.config.online_store.type != "sqlite":
        pytest.skip("a Redis store has no tables: a view nobody wrote is one that knows no customer")
    service = apply_unmaterialized_churn_service(own_registry.store, "churn_missing")
    with sqlite3.connect(own_registry.store.config.online_store.path) as db:
        db.execute("DROP TABLE fintech_churn_missing_features")
    rows = [{"customer_id": c} for c in customers[:10]]
    with pytest.raises(FeaturesUnreadable, match="cannot serve 'churn_missing': no such table: fintech_churn_missing_features"):
        own_registry.read(service, rows)
    assert own_registry.read("churn_v1", rows).found.all()
