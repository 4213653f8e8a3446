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


# Feast's types for our names. Feast starts Ray on first use (feast/infra/ray_initializer.py): a Ray
# this process already started or joined as it is, else the cluster RAY_ADDRESS names, else a local
# one. Its local one takes os.cpu_count() CPUs, the host's in a container with a CPU limit; num_cpus
# None lets Ray count the CPUs it may use, as training/partitions.py's Ray does.
BATCH_ENGINES = {"local": {"type": "local"}, "ray": {"type": "ray.engine", "ray_conf": {"num_cpus": None}}}
RAY_OFFLINE_STORE = {"type": "ray", "ray_conf": {"num_cpus": None}}


def store_config(settings: Settings, redis_timeout_s: float | None = None, online_only: bool = False,
                 offline_store: str | None = None, batch_engine: str | None = None):
    """feature_store.yaml with this data folder's values in place of its variables, as a RepoConfig.

    With redis_timeout_s, the Redis client gives up connecting or waiting for a reply after that
    long (redis-py's socket timeouts, passed through Feast's connection string) instead of waiting
    for ever; a timeout REDIS_URL already names is kept.

    online_only: for a process that reads and pushes online only (the service, the stream
    consumer). Its offline store is then Feast's file store, which it never uses either: the
    yaml's DuckDB one would import ibis and DuckDB (3.7 s here), which the bento does not carry.
    offline_store: another offline store type than the yaml's (the offline benchmarks compare them);
    "ray" is Feast's Ray store, whose required storage_path (where it would write saved datasets; a
    training set is not written there) is $DATA_DIR/feast/ray.
    batch_engine: what materializes, "local" (Feast's default, in this process) or "ray" (Feast's Ray
    compute engine); the yaml's when not given."""
    import yaml
    from feast.repo_config import RepoConfig

    values = yaml.safe_load(Template(yaml_path(settings).read_text()).substitute(store_environment(settings)))
    if online_only or offline_store:
        values["offline_store"] = {"type": "file" if online_only else offline_store}
    if values.get("offline_store", {}).get("type") == "ray":
        values["offline_store"] = {**RAY_OFFLINE_STORE, "storage_path": str(settings.data_dir.resolve() / "feast" / "ray"),
                                   **values["offline_store"]}
    if batch_engine is not None:
        if batch_engine not in BATCH_ENGINES:
            raise ValueError(f"unknown batch engine {batch_engine!r}; known: {', '.join(BATCH_ENGINES)}")
        values["batch_engine"] = {**BATCH_ENGINES[batch_engine]}
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
               offline_store: str | None = None, batch_engine: str | None = None):
    """A FeatureStore on this data folder and the chosen online store (see store_config)."""
    from feast import FeatureStore

    config = store_config(settings, redis_timeout_s, online_only, offline_store, batch_engine)
    return FeatureStore(repo_path=str(settings.feature_repo), config=config)
