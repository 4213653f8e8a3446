"""One typed settings object for the offline pipeline, read from the environment.

Every field can be set by an environment variable of the same name in upper case
(``DATA_DIR``, ``MLFLOW_TRACKING_URI``, ``ONLINE_STORE`` ...). Nothing is read or created
until :func:`get_settings` is called.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    data_dir: Path = Field(REPO_ROOT / "data", description="Where data, features and the Feast stores live.")
    mlflow_tracking_uri: str = Field(
        "", description="MLflow tracking server or database; empty means sqlite:///<data_dir>/mlflow.db."
    )
    mlflow_tracking_password_file: Path | None = Field(None, description=(
        "A file holding the password of the registry account MLFLOW_TRACKING_USERNAME names (a mounted Secret). "
        "Read when the settings are, into MLflow's MLFLOW_TRACKING_PASSWORD of this process (not of the pod's spec), "
        "unless that is already set."))
    feature_repo: Path = Field(REPO_ROOT / "feature_repo", description="The Feast feature repository.")
    online_store: Literal["sqlite", "redis"] = Field("sqlite", description="Feast online store to use.")
    redis_url: str = Field("localhost:6379", description="Redis connection string when online_store=redis.")
    redis_password_file: Path | None = Field(None, description=(
        "A file holding the Redis password (a mounted Secret), added to the connection string; keeps it out of the environment."))

    def model_post_init(self, _) -> None:
        """MLflow's client takes a password from its environment variable or ~/.mlflow/credentials
        only; a Secret mounted as a file reaches it through the first."""
        path = self.mlflow_tracking_password_file
        if path is None or "MLFLOW_TRACKING_PASSWORD" in os.environ:
            return
        try:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = path.read_text().strip()
        except OSError as e:
            raise ValueError(f"MLFLOW_TRACKING_PASSWORD_FILE={path}: cannot read it ({e.strerror})") from e

    @property
    def redis_connection(self) -> str:
        """REDIS_URL, with the password REDIS_PASSWORD_FILE holds when it is set."""
        if self.redis_password_file is None:
            return self.redis_url
        return f"{self.redis_url},password={self.redis_password_file.read_text().strip()}"

    # synthetic data
    seed: int = Field(42, description="Seed of the synthetic data, the training samples and the models: the same seed, the same run.")
    n_customers: int = Field(10_000, ge=1, description="Customers the synthetic data generator makes.")
    months: int = Field(12, ge=1, description="Months of transactions the synthetic data generator makes.")
    start_date: date = Field(date(2025, 10, 1), description="First day of the synthetic transactions.")

    # features and labels
    churn_horizon_days: int = Field(60, description="A customer churns when inactive for this many days after a snapshot.")
    snapshot_every_days: int = Field(30, ge=1, description="Days between two feature snapshots of every customer.")
    min_history_days: int = Field(90, description="First snapshot comes this long after the first transaction.")
    engine: Literal["local", "ray"] = Field("local", description=(
        "Where the features of each partition of customers are computed: in this process, or as Ray tasks "
        "(a local Ray, or the cluster RAY_ADDRESS names)."))
    partitions: int = Field(16, ge=1, description="Partitions the transactions are split into, by a hash of the customer id.")

    # training
    fraud_sample: int = Field(200_000, ge=1, description=(
        "Transactions sampled for the fraud training set (seeded, stratified on fraud; training/sampling.py)."))
    training_customers: int = Field(100_000, ge=1, description=(
        "Customers the churn and segment training sets are drawn from when there are more (seeded, churn "
        "stratified on whether the customer ever churned)."))
    fraud_cost_missed: float = Field(200.0, gt=0, description=(
        "What a fraudulent transaction that is accepted costs (the loss and the chargeback): with the two below, "
        "it chooses the fraud model's review and block thresholds at training (training/outcomes.py)."))
    fraud_cost_review: float = Field(4.0, gt=0, description="What reviewing one transaction costs (an analyst's time).")
    fraud_cost_blocked_good: float = Field(25.0, gt=0, description=(
        "What blocking a good transaction costs (the margin lost, a customer annoyed)."))
    segment_k_min: int = Field(3, ge=2, description="Fewest segments the segmentation tries (k of k-means, chosen by silhouette).")
    segment_k_max: int = Field(8, ge=2, description="Most segments the segmentation tries.")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.data_dir.resolve() / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path | None:
        """Where new experiments keep artifacts with the default local registry; a tracking
        server decides for itself."""
        return None if self.mlflow_tracking_uri else self.data_dir / "mlruns"

    @property
    def secrets_dir(self) -> Path:
        """The local API keys: the hashes the service checks and the local clients' key (core/api_keys.py)."""
        return self.data_dir / "secrets"

    @property
    def explain_log(self) -> Path:
        """Who read which customer's feature values through explain, and when: one JSON line per
        call, appended only (core/audit.py)."""
        return self.data_dir / "audit" / "explain.jsonl"

    @property
    def audit_log(self) -> Path:
        """Who changed serving, and when: one JSON line per admin action, appended only (core/audit.py)."""
        return self.data_dir / "audit" / "admin.jsonl"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def transactions_by_customer_dir(self) -> Path:
        """The accepted transactions, one Parquet file per partition of customers (training/partitions.py)."""
        return self.data_dir / "clean" / "transactions_by_customer"

    @property
    def transactions_path(self) -> Path:
        return self.raw_dir / "transactions.parquet"

    @property
    def customers_path(self) -> Path:
        return self.raw_dir / "customers.parquet"


def get_settings(**overrides) -> Settings:
    """Read settings from the environment; keyword arguments win over the environment."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
