"""The feature store's configuration from the settings (core/store.py)."""

import subprocess
import sys

import pytest

from core.settings import REPO_ROOT as ROOT
from core.settings import get_settings
from core.store import store_config


def test_the_redis_password_comes_from_its_file_and_the_timeouts_are_added(tmp_path):
    password = tmp_path / "password"
    password.write_text("s3cret\n")  # as a mounted Secret's file may end
    settings = get_settings(data_dir=tmp_path, online_store="redis", redis_url="fintech-redis:6379", redis_password_file=password)
    assert store_config(settings, redis_timeout_s=0.5).online_store.connection_string == (
        "fintech-redis:6379,password=s3cret,socket_timeout=0.5,socket_connect_timeout=0.5")
    plain = get_settings(data_dir=tmp_path, online_store="redis", redis_url="localhost:6390")
    assert store_config(plain).online_store.connection_string == "localhost:6390"


def test_the_pipeline_joins_on_duckdb_and_an_online_only_process_never_imports_it(tmp_path):
    assert store_config(get_settings(data_dir=tmp_path)).offline_store.type == "duckdb"
    # in a process of its own: this one may have imported DuckDB already
    script = ("import sys; from core.settings import get_settings; from core.store import store_config; "
              f"config = store_config(get_settings(data_dir={str(tmp_path)!r}, online_store='redis'), online_only=True); "
              "print(config.offline_store.type, config.online_store.type, 'duckdb' in sys.modules, 'ibis' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["file", "redis", "False", "False"]


def test_ray_is_chosen_by_name_and_takes_the_cpus_ray_counts_and_the_defaults_stay_local_and_duckdb(tmp_path):
    settings = get_settings(data_dir=tmp_path)
    default = store_config(settings)
    assert (default.batch_engine.type, default.offline_store.type) == ("local", "duckdb")
    ray = store_config(settings, offline_store="ray", batch_engine="ray")
    assert (ray.batch_engine.type, ray.offline_store.type) == ("ray.engine", "ray")
    # num_cpus None: Ray counts the CPUs it may use (a container's limit), not os.cpu_count()
    assert ray.batch_engine.ray_conf == ray.offline_store.ray_conf == {"num_cpus": None}
    assert ray.offline_store.storage_path == str(tmp_path.resolve() / "feast" / "ray")  # Feast requires one
    assert store_config(settings, batch_engine="local").batch_engine.type == "local"
    with pytest.raises(ValueError, match="unknown batch engine 'spark'"):
        store_config(settings, batch_engine="spark")


def test_the_latest_row_written_online_is_each_customers_newest_and_of_two_at_once_the_later_id():
    """What materialize would leave: per customer the newest row in the window; the stream's rows of
    one second are ordered by transaction id, as the stream consumer orders them."""
    from types import SimpleNamespace

    import pandas as pd

    from training.store import write_latest

    written = {}
    view = SimpleNamespace(name="customer_stream", batch_source=SimpleNamespace(path="/data/features/stream_features.parquet"),
                           features=[SimpleNamespace(name="txn_count_1h")])
    fake = SimpleNamespace(list_feature_views=lambda: [view], write_to_online_store=lambda name, frame: written.update({name: frame}))
    t = pd.Timestamp("2026-03-01 12:00", tz="UTC")
    stream = pd.DataFrame({"customer_id": ["A", "A", "A", "B", "B"], "transaction_id": ["T2", "T9", "T1", "U1", "U2"],
                           "event_timestamp": [t, t - pd.Timedelta(hours=1), t, t, t + pd.Timedelta(days=9)],
                           "txn_count_1h": [2.0, 1.0, 3.0, 5.0, 6.0]})
    assert write_latest(fake, {"stream_features": stream, "customer_features": stream.head(0)}, t - pd.Timedelta(days=1), t) == 2
    got = written["customer_stream"]
    assert got["customer_id"].tolist() == ["A", "B"] and got["txn_count_1h"].tolist() == [2.0, 5.0]  # A: T2 over T1; B: U2 is after the window
    assert list(got.columns) == ["customer_id", "event_timestamp", "txn_count_1h"]
