"""Copy the registry's `champion` versions into the BentoML model store, so a running server
never needs the MLflow server: `python -m rollout.import_models [--alias champion]`; with `--check`,
only whether every family has a version under the alias (exit 1 if not).

A version already in the store (same name and registry version) is not copied again.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from core.families import FAMILIES
from core.registry import mlflow_client
from core.settings import get_settings
from scoring.loading import read_importance

log = logging.getLogger(__name__)


def bento_tag(name: str, version: str) -> str:
    return f"{name}:v{version}"


def import_family(name: str, alias: str, tracking_uri: str):
    import bentoml
    import mlflow

    client = mlflow_client(tracking_uri)
    version = str(client.get_model_version_by_alias(name, alias).version)
    tag = bento_tag(name, version)
    try:
        existing = bentoml.models.get(tag)
        log.info("%s already in the BentoML store", tag)
        return existing
    except bentoml.exceptions.NotFound:
        pass
    mlflow.set_tracking_uri(tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{name}@{alias}")
    importance = {}
    if FAMILIES[name].importance:
        with tempfile.TemporaryDirectory() as tmp:
            importance = read_importance(info.run_id, tracking_uri, Path(tmp))
    model = bentoml.mlflow.import_model(
        tag,
        f"models:/{name}@{alias}",
        labels={"family": name, "alias": alias, "registry_version": version},
        metadata={"registry_version": version, "alias": alias, "run_id": info.run_id,
                  "model_metadata": json.dumps(info.metadata), "global_importance": json.dumps(importance)},
    )
    log.info("imported %s (registry %s@%s = version %s)", model.tag, name, alias, version)
    return model


def missing(alias: str, tracking_uri: str) -> list[str]:
    """The families the registry names no version of under `alias`."""
    client = mlflow_client(tracking_uri)
    absent = []
    for name in FAMILIES:
        try:
            client.get_model_version_by_alias(name, alias)
        except Exception:  # MLflow raises its own for an unknown model or alias
            absent.append(name)
    return absent


def main(alias: Annotated[str, typer.Option(help="Registry alias to import.")] = "champion",
         check: Annotated[bool, typer.Option("--check", help="Import nothing: exit 1 if a family has no version under the alias.")] = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    settings = get_settings()
    if check:
        absent = missing(alias, settings.tracking_uri)
        typer.echo(f"no {alias} version of: {', '.join(absent)}" if absent else f"every family has a {alias} version")
        raise typer.Exit(1 if absent else 0)
    for name in FAMILIES:
        model = import_family(name, alias, settings.tracking_uri)
        typer.echo(f"{name}: {model.tag}")


if __name__ == "__main__":
    typer.run(main)
