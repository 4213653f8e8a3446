"""The Feast feature store of a data folder, opened with its paths given, not read from the process
environment: feature_store.yaml (or feature_store.redis.yaml) names $DATA_DIR and $REDIS_URL, and
`store_config` fills them in from the settings.

    store = open_store(settings)        # the store the pipeline materialized under settings.data_dir
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from core.settings import Settings


def store_environment(settings: Settings) -> dict[str, str]:
    """The values feature_store.yaml and the definitions in feature_repo/ read."""
    return {"DATA_DIR": str(settings.data_dir.resolve()), "REDIS_URL": settings.redis_connection}


def yaml_path(settings: Settings) -> Path:
    name = "feature_store.yaml" if settings.online_store == "sqlite" else f"feature_store.{settings.online_store}.yaml"
    return settings.feature_repo / name


def store_config(settings: Settings, redis_timeout_s: float | None = None, online_only: bool = False,
                 offline_store: str | None = None):
    """feature_store.yaml with this data folder's values in place of its variables, as a RepoConfig.

    With redis_timeout_s, the Redis client gives up connecting or waiting for a reply after that
    long (redis-py's socket timeouts, passed through Feast's connection string) instead of waiting
    for ever; a timeout REDIS_URL already names is kept.

    online_only: for a process that reads and pushes online only (the service, the stream
    consumer). Its offline store is then Feast's file store, which it never uses either: the
    yaml's DuckDB one would import ibis and DuckDB (3.7 s here), which the bento does not carry.
    offline_store: another offline store type than the yaml's (the offline benchmark compares two)."""
    import yaml
    from feast.repo_config import RepoConfig

    values = yaml.safe_load(Template(yaml_path(settings).read_text()).substitute(store_environment(settings)))
    if online_only or offline_store:
        values["offline_store"] = {"type": "file" if online_only else offline_store}
    config = RepoConfig(**values)
    config.repo_path = settings.feature_repo
    if redis_timeout_s is not None and settings.online_store == "redis":
        options = config.online_store.connection_string
        for option in ("socket_timeout", "socket_connect_timeout"):
            if f"{option}=" not in options:
                options += f",{option}={redis_timeout_s}"
        config.online_store.connection_string = options
    return config


def open_store(settings: Settings, redis_timeout_s: float | None = None, online_only: bool = False,
               offline_store: str | None = None):
    """A FeatureStore on this data folder and the chosen online store (see store_config)."""
    from feast import FeatureStore

    config = store_config(settings, redis_timeout_s, online_only, offline_store)
    return FeatureStore(repo_path=str(settings.feature_repo), config=config)
