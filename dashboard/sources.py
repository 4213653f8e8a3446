"""Everything the dashboard reads besides the service: the data files (customers, transactions,
features), the inference log, the newest drift report, and the MLflow registry. Nothing here loads
a model or computes a score.

A source that is not there raises SourceMissing, a registry that does not answer RegistryDown;
both carry a message a page shows as it is.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.registry import CHALLENGER, CHAMPION, SHADOW_TAG, SHARE_TAG, fail_fast, mlflow_client, unreachable
from core.settings import Settings


class SourceMissing(RuntimeError):
    """A file or report the page needs is not there (yet)."""


class RegistryDown(RuntimeError):
    """The MLflow registry could not be read."""


def modified(path: Path) -> str:
    """When a file was written, in UTC: what a page says its numbers are as of."""
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _need(path: Path, made_by: str) -> Path:
    if not path.exists():
        raise SourceMissing(f"{path} does not exist yet: `{made_by}` writes it.")
    return path


# --- data files -------------------------------------------------------------------------------

def read_customers(settings: Settings) -> pd.DataFrame:
    return pd.read_parquet(_need(settings.customers_path, "make data"))


def daily_transactions(settings: Settings) -> pd.DataFrame:
    """Per day: transactions, volume (sum of amounts) and the labelled fraud rate."""
    frame = pd.read_parquet(_need(settings.transactions_path, "make data"), columns=["timestamp", "amount", "is_fraud"])
    daily = frame.groupby(frame["timestamp"].dt.floor("D")).agg(
        transactions=("amount", "size"), volume=("amount", "sum"), fraud_rate=("is_fraud", "mean"))
    return daily.rename_axis("day").reset_index()


def customer_transactions(settings: Settings, customer_id: str) -> pd.DataFrame:
    """One customer's transactions, oldest first."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(_need(settings.transactions_path, "make data"), format="parquet")
    frame = dataset.to_table(filter=ds.field("customer_id") == customer_id).to_pandas()
    return frame.sort_values("timestamp", ignore_index=True)


def find_customers(customers: pd.DataFrame, query: str, limit: int = 50) -> pd.DataFrame:
    """Customers whose id is `query` or contains it (case-insensitive); an exact match comes first."""
    query = query.strip()
    if not query:
        return customers.iloc[:0]
    ids = customers["customer_id"]
    exact = customers[ids.str.upper() == query.upper()]
    partial = customers[ids.str.contains(query, case=False, regex=False) & ~ids.isin(exact["customer_id"])]
    return pd.concat([exact, partial]).head(limit)


def latest_snapshot_ids(settings: Settings) -> tuple[list[str], pd.Timestamp]:
    """The customers of the newest feature snapshot (the ones the online store holds), and its time."""
    path = _need(settings.features_dir / "customer_features.parquet", "make features")
    frame = pd.read_parquet(path, columns=["customer_id", "event_timestamp"])
    latest = frame["event_timestamp"].max()
    return sorted(frame.loc[frame["event_timestamp"] == latest, "customer_id"]), latest


# --- the inference log and drift reports ----------------------------------------------------

def read_inference_log(settings: Settings, family: str, columns: list[str] | None = None) -> pd.DataFrame:
    """What the service scored for a family and logged (champion and challenger rows); of `columns`,
    those the log has."""
    import pyarrow.dataset as ds

    directory = settings.data_dir / "inference_log" / family
    if not directory.exists() or not any(directory.rglob("*.parquet")):
        raise SourceMissing(f"The service has logged no {family} predictions yet ({directory}).")
    import pyarrow as pa

    found = ds.dataset(directory, format="parquet", partitioning="hive", exclude_invalid_files=True)
    # every file's columns: a newer one may have a column (fraud's `rules`) older ones lack
    schema = pa.unify_schemas([found.schema, *(f.physical_schema for f in found.get_fragments())])
    dataset = ds.dataset(directory, format="parquet", partitioning="hive", exclude_invalid_files=True, schema=schema)
    columns = [c for c in columns if c in schema.names] if columns else None
    table = dataset.to_table(columns=columns, filter=ds.field("role").isin(["champion", "challenger"]))
    return table.to_pandas()


@dataclass
class DriftReport:
    folder: Path
    summary: dict

    @property
    def html(self) -> Path:
        return self.folder / "drift.html"

    @property
    def made(self) -> str:
        return modified(self.folder / "summary.json")


def newest_drift_report(settings: Settings, family: str) -> DriftReport:
    folders = sorted((settings.data_dir / "reports" / "drift").glob(f"{family}-*/summary.json"))
    if not folders:
        raise SourceMissing(f"No drift report of {family} yet: `make drift-report MODEL={family}` writes one.")
    return DriftReport(folders[-1].parent, json.loads(folders[-1].read_text()))


def newest_promotion_report(settings: Settings, family: str, challenger: str) -> dict | None:
    """The newest promotion report (make promote) of `challenger`, with its `path` and when it was
    `made`; None when there is none."""
    reports = sorted((settings.data_dir / "reports" / "promotions").glob(f"{family}-v{challenger}-*.json"),
                     key=lambda path: path.stat().st_mtime)
    if not reports:
        return None
    return {**json.loads(reports[-1].read_text()), "path": reports[-1], "made": modified(reports[-1])}


# --- the registry ----------------------------------------------------------------------------

@dataclass
class Version:
    version: str
    aliases: list[str]
    created: datetime
    run_id: str
    metrics: dict[str, float]


@dataclass
class RegisteredModel:
    name: str
    versions: list[Version]  # newest first
    share: float  # of customers the challenger answers, percent
    shadow: bool

    def by_alias(self, alias: str) -> Version | None:
        return next((v for v in self.versions if alias in v.aliases), None)


def _registry(settings: Settings, timeout_s: float):
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise RegistryDown(f"There is no registry at {uri} yet: `make train` makes it.")
    fail_fast(int(timeout_s))
    return mlflow_client(uri)


def _down(settings: Settings, what: str, error: Exception) -> RegistryDown:
    """The error a page shows: the registry not answering, or what it answered."""
    if (cause := unreachable(error)) is not None:
        return RegistryDown(f"The registry at {settings.tracking_uri} is not answering ({type(cause).__name__}) "
                            f"while reading {what}. Start it, or point MLFLOW_TRACKING_URI at it.")
    return RegistryDown(f"Cannot read {what} from the registry at {settings.tracking_uri}: {str(error).splitlines()[0][:200]}")


def registered_model(settings: Settings, family: str, timeout_s: float = 10) -> RegisteredModel:
    """A family's versions with their aliases and test metrics, and the canary's tags."""
    client = _registry(settings, timeout_s)
    try:
        model = client.get_registered_model(family)
        versions = client.search_model_versions(f"name='{family}'")
        metrics = {v.run_id: client.get_run(v.run_id).data.metrics for v in versions if v.run_id}
    except Exception as e:
        raise _down(settings, f"the {family} model", e) from e
    aliases: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    rows = [Version(str(v.version), sorted(aliases.get(str(v.version), [])),
                    datetime.fromtimestamp(v.creation_timestamp / 1000, UTC), v.run_id, metrics.get(v.run_id, {}))
            for v in versions]
    rows.sort(key=lambda v: int(v.version), reverse=True)
    tags = model.tags or {}
    has_challenger = CHALLENGER in model.aliases and model.aliases[CHALLENGER] != model.aliases.get(CHAMPION)
    return RegisteredModel(family, rows, float(tags.get(SHARE_TAG, 0.0)) if has_challenger else 0.0,
                           has_challenger and tags.get(SHADOW_TAG, "").lower() in ("1", "true", "yes"))


def version_table(settings: Settings, run_id: str, name: str, timeout_s: float = 10) -> pd.DataFrame | None:
    """A table a training run stored beside its model (`<name>.csv`, or a parquet file by its full
    name); None when that version did not store it."""
    client = _registry(settings, timeout_s)
    filename = name if name.endswith(".parquet") else f"{name}.csv"
    try:
        stored = {a.path for a in client.list_artifacts(run_id)}
        if filename not in stored:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(client.download_artifacts(run_id, filename, tmp))
            return pd.read_parquet(path) if filename.endswith(".parquet") else pd.read_csv(path)
    except Exception as e:
        raise _down(settings, f"{filename} of run {run_id}", e) from e


def registry_metadata(settings: Settings, family: str, version: str, timeout_s: float = 10) -> dict:
    """The metadata a version was stored with (features, threshold, segment names, ...)."""
    client = _registry(settings, timeout_s)
    try:
        run_id = client.get_model_version(family, version).run_id
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(client.download_artifacts(run_id, "model_metadata.json", tmp)).read_text())
    except Exception as e:
        raise _down(settings, f"the metadata of {family} version {version}", e) from e


# --- the service's request counts ----------------------------------------------------------------

def requests_by_route(summary: dict) -> pd.DataFrame:
    """Per route, from the service's request summary: requests, client errors (4xx), server errors
    (5xx), the 5xx rate, and the worst p99 latency over the versions that answered."""
    columns = ["route", "requests", "client_errors", "server_errors", "latency_p99_ms"]
    frame = pd.DataFrame(summary.get("routes", []))
    if frame.empty:
        return pd.DataFrame(columns=[*columns, "error_rate"])
    frame = frame.groupby("route").agg(requests=("requests", "sum"), client_errors=("client_errors", "sum"),
                                       server_errors=("server_errors", "sum"), latency_p99_ms=("latency_p99_ms", "max"))
    frame["error_rate"] = frame["server_errors"] / frame["requests"].where(frame["requests"] > 0)
    return frame.reset_index()
