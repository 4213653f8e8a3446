"""Command line of the offline pipeline: `python -m training --help`.

    python -m training data                     # synthetic customers and transactions
    python -m training features [--transactions my.csv]
    python -m training train
    python -m training all                      # the three in a row
    python -m training candidate fraud_v2       # fraud on fraud_v2, a new version with no alias

Options default to the settings (environment variables DATA_DIR, MLFLOW_TRACKING_URI, ...).
"""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from core import settings as core_settings
from core.contract import ContractError
from core.families import FAMILIES
from training.store import FeatureStoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Offline pipeline: data, features, models.")

def get_settings(**overrides):
    """The settings, or exit 2 naming each environment variable (or option) whose value does not fit."""
    from pydantic import ValidationError

    try:
        return core_settings.get_settings(**overrides)
    except ValidationError as e:
        for error in e.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            typer.secho(f"error: {name}: {error['msg']} (got {error.get('input')!r})", fg="red", err=True)
        raise typer.Exit(2) from e


class Engine(str, Enum):
    local = "local"
    ray = "ray"


DataDir = Annotated[Path | None, typer.Option(help="Data folder (env DATA_DIR, default ./data).")]
OnlineStore = Annotated[str | None, typer.Option(help="Feast online store: sqlite or redis (env ONLINE_STORE).")]


@app.callback()
def _logging(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def data(
    data_dir: DataDir = None,
    customers: Annotated[int | None, typer.Option(help="Number of customers (default 10,000).")] = None,
    months: Annotated[int | None, typer.Option(help="Months of transactions (default 12).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; same seed, same data (default 42).")] = None,
    drift_months: Annotated[int, typer.Option(help="Also write this many later months with a known drift.")] = 0,
    later_days: Annotated[int, typer.Option(help=(
        "Also write the next days, nothing changed, to raw/transactions_later.parquet (the load test replays them).")
    )] = 30,
) -> None:
    """Generate synthetic customers and transactions under DATA_DIR/raw."""
    from training.pipeline import make_data

    settings = get_settings(data_dir=data_dir, n_customers=customers, months=months, seed=seed)
    make_data(settings, drift_months=drift_months, later_days=later_days)


@app.command()
def features(
    data_dir: DataDir = None,
    transactions: Annotated[Path | None, typer.Option(help="Your transactions file (.parquet or .csv) (default DATA_DIR/raw/transactions.parquet).")] = None,
    customers_file: Annotated[Path | None, typer.Option(help="Customers file; transactions of other customers are rejected.")] = None,
    online_store: OnlineStore = None,
    engine: Annotated[Engine | None, typer.Option(help=(
        "Where each partition's features are computed: local (this process) or ray (a local Ray with this "
        "machine's cores, or the cluster RAY_ADDRESS names) (env ENGINE, default local).")
    )] = None,
    partitions: Annotated[int | None, typer.Option(min=1, help="Partitions of customers (env PARTITIONS, default 16).")] = None,
) -> None:
    """Validate transactions, compute point-in-time features, apply and materialize Feast."""
    from training.pipeline import build_features

    settings = get_settings(data_dir=data_dir, online_store=online_store, engine=engine and engine.value, partitions=partitions)
    try:
        summary = build_features(settings, transactions, customers_file)
    except (ContractError, FeatureStoreError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def train(data_dir: DataDir = None, online_store: OnlineStore = None) -> None:
    """Train churn, fraud and segment models and register them in MLflow."""
    from training.pipeline import train_all

    settings = get_settings(data_dir=data_dir, online_store=online_store)
    results = train_all(settings)
    for name, result in results.items():
        r = result["registered"]
        typer.echo(f"{name}: version {r['version']} aliases={r['aliases']} in {settings.tracking_uri}")


@app.command()
def candidate(
    feature_service: Annotated[str, typer.Argument(help="The FeatureService the new version reads.")] = "fraud_v2",
    family: Annotated[str, typer.Option(help="The model family (one with labels).")] = "fraud",
    data_dir: DataDir = None,
    online_store: OnlineStore = None,
) -> None:
    """Train a family on another of its FeatureServices and register it as a new version with no
    alias, beside the champion's PR-AUC on the same out-of-time rows (written to
    DATA_DIR/candidate_<service>.json)."""
    from training.pipeline import train_candidate

    settings = get_settings(data_dir=data_dir, online_store=online_store)
    if family not in FAMILIES:
        typer.secho(f"error: unknown family {family!r}; known: {', '.join(FAMILIES)}", fg="red", err=True)
        raise typer.Exit(2)
    try:
        result = train_candidate(settings, family, feature_service)
    except ValueError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    typer.echo(json.dumps(result, indent=2))


@app.command(name="all")
def run_all(data_dir: DataDir = None, online_store: OnlineStore = None) -> None:
    """data, features and train in a row."""
    data(data_dir=data_dir)
    features(data_dir=data_dir, online_store=online_store)
    train(data_dir=data_dir, online_store=online_store)
