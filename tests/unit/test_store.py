"""The feature store's configuration from the settings (core/store.py)."""

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
