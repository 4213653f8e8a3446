"""Run an overlay's manifests under podman, from the images built here (make images).

    python -m pods plan --overlay dev     # what would run, and every adaptation, without running it
    python -m pods up --overlay dev       # the pods up, probed; serving on 127.0.0.1:3080
    python -m pods down --overlay dev     # every pod, forwarder, volume and secret file removed
"""

from pathlib import Path
from typing import Annotated

import typer

from core.settings import get_settings
from pods.cluster import Cluster
from pods.runtime import PodmanError

app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])
Overlay = Annotated[str, typer.Option(help="The folder of k8s/overlays/ to render.")]


def state_dir(overlay: str) -> Path:
    """The Secrets' files and the test client's key: under DATA_DIR, never in the repository."""
    return get_settings().data_dir / "pods" / overlay


@app.command()
def plan(overlay: Overlay = "dev") -> None:
    """Print the pods, jobs and Services that would run, and each adaptation of the manifests."""
    cluster = Cluster.render(overlay, state_dir(overlay))
    for pod in cluster.plan.pods:
        typer.echo(f"pod {pod.name} ({pod.kind} {pod.workload}): {', '.join(c.image for c in pod.containers)}")
    for name in cluster.plan.jobs:
        typer.echo(f"job {name}")
    for service in cluster.plan.services:
        typer.echo(f"service {service.name}: {service.ports} -> {', '.join(service.pods)}")
    for line in cluster.plan.adaptations:
        typer.echo(f"adapted: {line}")
    for line in cluster.plan.not_exercised:
        typer.echo(f"not exercised: {line}")


@app.command()
def up(overlay: Overlay = "dev",
       port: Annotated[int, typer.Option(help="The serving pods' port on 127.0.0.1 (the first pod's).")] = 3080,
       dashboard_port: Annotated[int, typer.Option(help="The dashboard pod's port on 127.0.0.1.")] = 8580) -> None:
    """Start the stores and the registry, seed data and models, run the features CronJob once,
    then start the rest; each pod must pass its probes within the manifest's deadlines."""
    cluster = Cluster.render(overlay, state_dir(overlay))
    try:
        cluster.up(publish={"fintech-serving": port, "fintech-dashboard": dashboard_port})
    except PodmanError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"serving: http://127.0.0.1:{port} (API key in {state_dir(overlay) / 'keys' / 'client.key'}); "
               f"dashboard: http://127.0.0.1:{dashboard_port}")


@app.command()
def down(overlay: Overlay = "dev") -> None:
    """Remove the overlay's pods, forwarders, network, volumes and Secret files."""
    Cluster.render(overlay, state_dir(overlay)).down()


if __name__ == "__main__":
    app()
