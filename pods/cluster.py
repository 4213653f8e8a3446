"""An overlay of k8s/ brought up under podman, in the order an operator brings up a new cluster:
the stores and the registry, the data a bank lands on the volume, the features CronJob's pod, the
models a training run registers, then the serving and dashboard pods, each probed.

    cluster = Cluster.render("dev", state_dir)   # kubectl kustomize k8s/overlays/dev
    cluster.up(publish={"fintech-serving": 3000})
    cluster.down()
"""

from __future__ import annotations

import secrets as random_secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from core import api_keys
from pods.plan import Plan, Pod, make_plan
from pods.runtime import PodmanError, ProbeResult, Runtime

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = "fintech-mlflow"
FEATURES_JOB = "fintech-features"
TRAINING_JOB = "fintech-retrain-churn"  # a pod with the registry writer's account and the data volume
SEED_CUSTOMERS = 2000  # the synthetic data set the seed pod writes: a few seconds of features and training


def render(overlay: str) -> list[dict]:
    text = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                          check=True, capture_output=True, text=True).stdout
    return [o for o in yaml.safe_load_all(text) if o]


def local_images(objects: list[dict], available: list[str]) -> tuple[dict[str, str], list[str]]:
    """Each of the project's images the manifests name -> the image built here with the same
    repository (make images tags them with the release, the overlays with theirs)."""
    named = {c["image"] for o in objects for c in pod_containers(o)}
    mapping, notes = {}, []
    for image in sorted(named):
        repository = repository_of(image)
        if "/" not in repository:
            continue  # a public image: the plan's stand-ins
        built = [image] if image in available else sorted(a for a in available if repository_of(a) == repository)
        if not built:
            raise PodmanError(f"image {image}: no image of {repository} is built here (make images)")
        mapping[image] = built[-1]
        if built[-1] != image:
            notes.append(f"image {image}: the one built here, {built[-1]}")
    return mapping, notes


def repository_of(image: str) -> str:
    """registry/name of registry/name:tag or registry/name@sha256:digest."""
    name = image.split("@")[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def pod_containers(obj: dict) -> list[dict]:
    """The containers of a workload's or a CronJob's pod template; none for other objects."""
    spec = obj.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return (template or {}).get("spec", {}).get("containers", [])


def make_secrets(state_dir: Path) -> dict[str, dict[str, str]]:
    """The Secrets the manifests reference and an operator creates (docs/guides/kubernetes.md): fresh
    passwords, an API key for the dashboard and one for the retraining jobs, and the service's key
    file holding their hashes and a test client's. The keys are kept under state_dir/keys."""
    keys_dir = state_dir / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    key_file = keys_dir / "api_keys.json"
    key_file.unlink(missing_ok=True)
    client = api_keys.new_key(key_file, "pods-test-client", ["inference", "explain", "admin"])
    dashboard = api_keys.new_key(key_file, "dashboard", ["inference", "explain"])
    rollout = api_keys.new_key(key_file, "rollout", ["inference", "explain", "admin"])
    (keys_dir / "client.key").write_text(client)
    return {
        "fintech-redis": {"password": random_secrets.token_urlsafe(24)},
        "fintech-postgres": {"password": random_secrets.token_urlsafe(24)},
        "fintech-mlflow-accounts": {name: random_secrets.token_urlsafe(24) for name in ("admin", "writer", "reader")},
        "fintech-serving-api-keys": {"api_keys.json": key_file.read_text()},
        "fintech-dashboard-credentials": {"api_key": dashboard},
        "fintech-rollout-credentials": {"api_key": rollout},
    }


@dataclass
class Cluster:
    plan: Plan
    runtime: Runtime
    secrets: dict[str, dict[str, str]]
    probe_results: list[ProbeResult] = field(default_factory=list)
    log: Callable[[str], None] = print

    @classmethod
    def render(cls, overlay: str, state_dir: Path, max_replicas: int | None = 1, log=print) -> Cluster:
        objects = render(overlay)
        available = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], check=True,
                                   capture_output=True, text=True).stdout.split()
        images, notes = local_images(objects, available)
        secrets = make_secrets(state_dir)
        plan = make_plan(objects, secrets, images, network=f"fintech-{overlay}", max_replicas=max_replicas)
        plan.adaptations[:0] = notes + ["Secrets: made by the harness (fresh passwords and API keys), written as files"]
        return cls(plan, Runtime(state_dir, log=log), secrets, log=log)

    @property
    def client_key(self) -> str:
        return (self.runtime.state_dir / "keys" / "client.key").read_text()

    def start(self, pods: list[Pod], publish: dict[str, int] | None = None) -> None:
        """Start the pods together, then wait for each to pass its probes; raise if one does not."""
        publish = publish or {}
        for pod in pods:
            first = pod is self.plan.pods_of(pod.workload)[0]  # one pod per port of this machine
            ports = {c.ports["http"]: publish[pod.workload] for c in pod.containers
                     if first and pod.workload in publish and "http" in c.ports}
            self.runtime.start(self.plan, pod, self.secrets, publish=ports)
        for pod in pods:
            results = self.runtime.wait_ready(pod)
            self.probe_results += results
            for result in results:
                state = f"passed in {result.seconds:.1f} s" if result.passed else "FAILED"
                self.log(f"  {result.probe.kind} probe {result.container} {' '.join(result.probe.action)}: "
                         f"{state} (deadline {result.probe.deadline_s:g} s)")
            failed = [r for r in results if not r.passed]
            if failed:
                raise PodmanError(f"pod {pod.name}: {failed[0].probe.kind} probe failed: {failed[0].detail}")

    def job(self, name: str, command: list[str] | None = None, env: dict[str, str] | None = None,
            timeout_s: float = 900) -> tuple[int, str]:
        """Run a CronJob's pod once: as its template says, or, with `command`, its pod (image,
        environment, volumes, security) running that command instead."""
        pod = self.plan.jobs[name]
        if command or env:
            [container] = pod.containers
            changed = replace(container, command=command or container.command, args=[] if command else container.args,
                              env={**container.env, **(env or {})})
            pod = replace(pod, name=f"{name}-{command[-1] if command else 'once'}", containers=[changed])
        return self.runtime.run_to_end(self.plan, pod, self.secrets, timeout_s)

    def up(self, publish: dict[str, int] | None = None) -> None:
        """Everything, in an operator's order; raise at the first pod or job that fails."""
        for line in self.plan.adaptations:
            self.log(f"adapted: {line}")
        for line in self.plan.not_exercised:
            self.log(f"not exercised: {line}")
        self.runtime.prepare(self.plan)
        self.runtime.start_services(self.plan)
        first = [p for p in self.plan.pods if p.kind == "StatefulSet" or p.workload == REGISTRY]
        self.start(first, publish)
        self.seed()
        self.start([p for p in self.plan.pods if p not in first], publish)

    def seed(self) -> None:
        """What a new cluster has before its first scheduled run: transactions on the data volume
        (synthetic, as `make data` makes them) and the features CronJob, in its pod; then models
        trained into the registry (as `make train` does) in a retraining job's pod, the one that
        holds the registry's writer account."""
        steps = [("seed: transactions on the data volume", FEATURES_JOB, ["python", "-m", "training", "data"],
                  {"N_CUSTOMERS": str(SEED_CUSTOMERS)}),
                 ("the features CronJob, once", FEATURES_JOB, None, None),
                 ("seed: models trained into the registry", TRAINING_JOB, ["python", "-m", "training", "train"], None)]
        for what, job, command, env in steps:
            self.log(what)
            code, logs = self.job(job, command, env)
            if code != 0:
                raise PodmanError(f"{what}: exit {code}\n{logs[-3000:]}")

    def down(self) -> None:
        self.runtime.down(self.plan)
