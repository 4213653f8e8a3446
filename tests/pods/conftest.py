"""An overlay's pods, up once for a test module under podman (pods/), from the images `make
images` built: stores, registry, seeded data and models, the features CronJob's run, serving,
the dashboard and the stream consumer, each probed; taken down when the module ends, so dev and
prod never run at once. `make test-pods` runs these tests; `make test` leaves them out (marker
`pods`)."""

import socket

import httpx

from pods.cluster import Cluster

API = "/api/v1/inference"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(overlay: str, state_dir, ports: dict[str, int]):
    """The overlay up, its pods' http ports published on `ports` (workload -> port); down after."""
    cluster = Cluster.render(overlay, state_dir)
    try:
        cluster.up(publish=ports)
        yield cluster
    finally:
        cluster.down()


def client(port: int, key: str) -> httpx.Client:
    """A client of a pod's own port, with the test client's key from the Secret's file."""
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"X-API-Key": key})


def assert_probed_in_time(cluster: Cluster) -> None:
    """Every probe of every container was run, and passed within initial delay + period x threshold."""
    named = {(f"{pod.name}-{c.name}", probe.kind) for pod in cluster.plan.pods for c in pod.containers for probe in c.probes}
    results = {(r.container, r.probe.kind): r for r in cluster.probe_results}
    assert set(results) == named
    late = {key: (r.seconds, r.probe.deadline_s) for key, r in results.items() if not r.passed or r.seconds > r.probe.deadline_s}
    assert late == {}


def assert_unprivileged(cluster: Cluster) -> None:
    """From inside each container: its manifest's user (never root: podman does not enforce
    runAsNonRoot), no effective capability, and a root filesystem that refuses a write."""
    for pod in cluster.plan.pods:
        for container in pod.containers:
            result = cluster.runtime.exec(pod, container, "sh", "-c",
                                          "id -u; id -g; grep CapEff /proc/self/status; touch /written 2>&1 && echo WROTE")
            uid, gid, capabilities, write = result.stdout.splitlines()
            assert (int(uid), int(gid)) == container.run_as and int(uid) != 0, pod.name
            assert capabilities.split() == ["CapEff:", "0000000000000000"], pod.name
            assert container.read_only_root and "Read-only file system" in write, (pod.name, write)
