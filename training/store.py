"""The Feast feature store as the pipeline uses it: apply, materialize, point-in-time retrieval.

feature_store.yaml and the definitions under feature_repo/ read $DATA_DIR (and $REDIS_URL), so
:func:`store_environment` is what ties a store to a data folder.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from training.settings import Settings

log = logging.getLogger(__name__)


class FeatureStoreError(RuntimeError):
    """Feast refused the feature repository or a store operation failed."""


def store_environment(settings: Settings) -> dict[str, str]:
    return {"DATA_DIR": str(settings.data_dir.resolve()), "REDIS_URL": settings.redis_url}


def yaml_path(settings: Settings) -> Path:
    name = "feature_store.yaml" if settings.online_store == "sqlite" else f"feature_store.{settings.online_store}.yaml"
    return settings.feature_repo / name


def apply(settings: Settings) -> None:
    """`feast apply` the definitions, exactly as a user would run it in feature_repo/."""
    (settings.data_dir / "feast").mkdir(parents=True, exist_ok=True)
    feast = Path(sys.executable).with_name("feast")
    done = subprocess.run(
        [str(feast), "--feature-store-yaml", str(yaml_path(settings).resolve()), "apply"],
        cwd=settings.feature_repo,
        env={**os.environ, **store_environment(settings)},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise FeatureStoreError(f"feast apply failed:\n{done.stderr.strip()[-2000:]}")
    log.info("feast apply: %s", " / ".join(line for line in done.stdout.splitlines() if line.startswith("Created")) or "no changes")


def open_store(settings: Settings):
    """A FeatureStore on this data folder and the chosen online store."""
    from feast import FeatureStore

    os.environ.update(store_environment(settings))  # read by feature_store.yaml
    return FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=yaml_path(settings))


def materialize(store, features: pd.DataFrame) -> None:
    """Load the latest feature row of every customer into the online store."""
    start = features["event_timestamp"].min().to_pydatetime()
    end = (features["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime()
    store.materialize(start_date=start, end_date=end)


def historical_features(store, entity_df: pd.DataFrame, feature_service: str) -> pd.DataFrame:
    """Point-in-time join of a FeatureService onto entity rows (customer_id, event_timestamp, ...)."""
    service = store.get_feature_service(feature_service)
    return store.get_historical_features(entity_df=entity_df, features=service).to_df()


def online_features(store, feature_service: str, customer_ids: list[str], extra: dict[str, list] | None = None) -> pd.DataFrame:
    rows = [{"customer_id": c} for c in customer_ids]
    if extra:
        for i, row in enumerate(rows):
            row.update({k: v[i] for k, v in extra.items()})
    service = store.get_feature_service(feature_service)
    return pd.DataFrame(store.get_online_features(features=service, entity_rows=rows).to_dict())
