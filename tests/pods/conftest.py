"""The dev overlay's pods, up once for the session under podman (pods/), from the images `make
images` built: stores, registry, seeded data and models, the features CronJob's run, serving,
the dashboard and the stream consumer, each probed. `make test-pods` runs these tests; `make test`
leaves them out (marker `pods`)."""

import socket

import httpx
import pytest

from pods.cluster import Cluster

API = "/api/v1/inference"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ports():
    return {"fintech-serving": free_port(), "fintech-dashboard": free_port()}


@pytest.fixture(scope="session")
def dev(tmp_path_factory, ports):
    cluster = Cluster.render("dev", tmp_path_factory.mktemp("pods-dev"))
    try:
        cluster.up(publish=ports)
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def serving(dev, ports):
    """A client of the serving pod's own port, with the test client's key from the Secret's file."""
    with httpx.Client(base_url=f"http://127.0.0.1:{ports['fintech-serving']}", timeout=60,
                      headers={"X-API-Key": dev.client_key}) as client:
        yield client
