"""The service's bulk feature reader against Feast's own `get_online_features`, on a real SQLite
store and a real Redis one: the same values for every feature, customer and store, so the
faster read cannot bring skew."""

import shutil
import sqlite3

import numpy as np
import pytest

from bentos.online import TS_SUFFIX, FeastReader
from bentos.scoring import FeaturesUnreadable
from core.realtime import OUTPUT_FEATURES as REQUEST_TIME_FEATURES
from tests.integration.conftest import apply_unmaterialized_churn_service
from training import store

STORED_SERVICES = ("churn_v1", "segment_v1")


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


@pytest.mark.integration
def test_a_service_with_on_demand_views_is_computed_by_feast(reader, customers):
    """fraud_v1's request-time features come from its on-demand view, run by Feast on the request."""
    transaction = {"amount": 250.0, "merchant_category": "travel", "channel": "online", "country": "FR",
                   "device_id": "d-1", "transaction_time": 1_700_000_000}
    features = reader.read("fraud_v1", [{"customer_id": customers[0], **transaction}, {"customer_id": "C_NOT_A_CUSTOMER", **transaction}])
    assert all(features.values[name][0] is not None for name in REQUEST_TIME_FEATURES)
    assert features.found.tolist() == [True, False]


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
