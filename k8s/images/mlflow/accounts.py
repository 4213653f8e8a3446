"""The MLflow server's accounts, made from a mounted Secret before `mlflow server --app-name
basic-auth` starts (k8s/base/mlflow.yaml runs it first):

    python accounts.py --secrets /etc/fintech/mlflow-accounts --database-uri postgresql://... \
        --config /tmp/basic_auth.ini --experiments fintech-models,... --models churn,fraud,segment

The Secret's folder holds one password per account: `admin` (the registry's administrator, used by
no pod), `writer` (training and the retraining jobs: they create the experiment and the registered
models, so they own them) and `reader` (serving, the dashboard, the drift reports). Every other
account reads only (`default_permission = READ`): a reader can download a version and read the
aliases, and can neither register a version nor move an alias on a model it did not create.

The writer owns the platform's experiments and registered models from the start: they are made here
when missing, and the writer is given MANAGE on them. Otherwise, on a new registry, any account
could create `churn` before the first training did, and own it: register a version and move its
champion, which every serving pod would then load.

Each start makes the accounts that are missing and gives each its password from the Secret, so a
changed password takes effect at the next restart. First it writes the basic-auth app's
configuration (0600) for MLFLOW_AUTH_CONFIG_PATH, which MLflow's auth module reads when it is
imported: the accounts' database and the admin account.
Needs only MLflow itself, the one package of the MLflow image.
"""

from __future__ import annotations

import argparse
import configparser
import os
from pathlib import Path

ACCOUNTS = {"admin": True, "writer": False, "reader": False}  # name: is it an administrator
ARTIFACT_ROOT = "mlflow-artifacts:/"  # what `mlflow server --serve-artifacts` gives a new experiment


def split(names: str) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


def read_passwords(folder: Path) -> dict[str, str]:
    passwords = {}
    for name in ACCOUNTS:
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"{path}: missing; the Secret needs a password for each of {', '.join(ACCOUNTS)}")
        passwords[name] = path.read_text().strip()
        if len(passwords[name]) < 12:
            raise SystemExit(f"{path}: MLflow refuses passwords shorter than 12 characters")
    return passwords


def write_config(path: Path, database_uri: str, admin_password: str) -> None:
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {"default_permission": "READ", "database_uri": database_uri, "admin_username": "admin",
                        "admin_password": admin_password,
                        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth"}
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as f:
        config.write(f)


def open_accounts(database_uri: str):
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)  # made, or migrated to this MLflow's schema
    return store


def make_accounts(store, passwords: dict[str, str]) -> list[str]:
    """Make or update each account; what was done, one line per account."""
    done = []
    for name, is_admin in ACCOUNTS.items():
        if store.has_user(name, use_primary=True):
            store.update_user(name, password=passwords[name], is_admin=is_admin)
            done.append(f"{name}: password set from the Secret")
        else:
            store.create_user(name, passwords[name], is_admin=is_admin)
            done.append(f"{name}: created")
    return done


def reserve_names(accounts, tracking_uri: str, experiments: list[str], models: list[str]) -> list[str]:
    """Make the experiments and registered models that are missing, and give the writer MANAGE on
    each (it may already have it: the permission is then set again)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    tracking, registry = TrackingStore(tracking_uri, ARTIFACT_ROOT), RegistryStore(tracking_uri)
    done = []
    for name in experiments:
        experiment = tracking.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else tracking.create_experiment(name)
        try:
            accounts.create_experiment_permission(experiment_id, "writer", "MANAGE")
        except MlflowException:  # already granted
            accounts.update_experiment_permission(experiment_id, "writer", "MANAGE")
        done.append(f"experiment {name}: the writer's")
    for name in models:
        try:
            registry.get_registered_model(name)
        except MlflowException:
            registry.create_registered_model(name)
        try:
            accounts.create_registered_model_permission(name, "writer", "MANAGE")
        except MlflowException:
            accounts.update_registered_model_permission(name, "writer", "MANAGE")
        done.append(f"registered model {name}: the writer's")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", type=Path, required=True, help="folder with one password file per account")
    parser.add_argument("--database-uri", required=True, help="where the accounts are kept (SQLAlchemy URI)")
    parser.add_argument("--config", type=Path, required=True, help="the basic-auth configuration file to write")
    parser.add_argument("--tracking-uri", help="the registry's database [default: --database-uri]")
    parser.add_argument("--experiments", default="", help="experiments the writer owns, comma-separated")
    parser.add_argument("--models", default="", help="registered models the writer owns, comma-separated")
    args = parser.parse_args()
    passwords = read_passwords(args.secrets)
    write_config(args.config, args.database_uri, passwords["admin"])  # MLflow's auth module reads it on import
    accounts = open_accounts(args.database_uri)
    lines = make_accounts(accounts, passwords)
    lines += reserve_names(accounts, args.tracking_uri or args.database_uri, split(args.experiments), split(args.models))
    for line in lines:
        print(f"mlflow accounts: {line}", flush=True)


if __name__ == "__main__":
    main()
