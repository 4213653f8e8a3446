"""What a cluster would run from an overlay's rendered manifests, as podman runs it.

`make_plan(objects, secrets, images)` reads the objects `kubectl kustomize` renders and returns
the pods, the jobs and the Services, each container already turned into the arguments of
`podman run`. Where podman cannot do what a cluster does, one step here bridges the difference,
and says so in `Plan.adaptations`; what no step exercises is listed in `Plan.not_exercised`.
Nothing in k8s/ is changed: the same YAML goes to a cluster.

The bridges:
- Deployments and StatefulSets: one pod per replica, named <name>-<ordinal>, with a podman network
  alias of its own name (at most `max_replicas`); an Argo Rollout that wraps a Deployment is that
  Deployment's pods, with no canary steps; a CronJob's jobTemplate runs once, on demand.
- Services: a forwarder container named after the Service (kube-proxy's part), listening on each
  Service port and passing connections to the selected pods' target ports.
- Secrets: files the harness writes (`secrets`: secret name -> {key: value}); a secret volume is a
  read-only folder of them, owned by root and the pod's fsGroup with the volume's mode, as the
  kubelet writes them; a secretKeyRef is the value itself.
- PersistentVolumeClaims (and StatefulSet claim templates): podman volumes, given to the pod's
  fsGroup (group-owned, setgid) as the kubelet does; emptyDir: a tmpfs.
- Probes: podman runs none of them; the harness runs each (`Probe`) inside the container, on the
  manifest's path, port, period, timeout and failure threshold.
- Images: the public images of the stores (redis, postgres), which no registry here serves, are
  replaced by stand-ins built from Debian's packages (pods/images/).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# public images no registry here serves -> the stand-in built from Debian's packages (pods/images/)
STAND_INS = {"redis": "localhost/fintech-standin-redis:bookworm",
             "postgres": "localhost/fintech-standin-postgres:bookworm"}
NOT_EXERCISED = ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress",
                 "ServiceMonitor", "PrometheusRule", "Certificate", "RayJob", "AnalysisTemplate")
WORKLOADS = ("Deployment", "StatefulSet", "Rollout")
POD_FIELDS_USED = {"containers", "volumes", "securityContext", "terminationGracePeriodSeconds",
                   # scheduling and API access: nothing to schedule or call on one machine
                   "automountServiceAccountToken", "enableServiceLinks", "topologySpreadConstraints",
                   "affinity", "restartPolicy", "serviceAccountName", "nodeSelector", "tolerations"}


class PlanError(ValueError):
    """The manifests ask for something this harness cannot run."""


@dataclass(frozen=True)
class Probe:
    kind: str  # startup, readiness or liveness
    action: tuple[str, ...]  # ("http", port, path) | ("tcp", port) | ("exec", *command)
    initial_delay_s: float
    period_s: float
    timeout_s: float
    failure_threshold: int

    @property
    def deadline_s(self) -> float:
        """How long the kubelet waits before it gives up on the container."""
        return self.initial_delay_s + self.period_s * self.failure_threshold


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    options: list[str]  # podman run's: user, security, limits, mounts, working directory
    env: dict[str, str]
    command: list[str] | None  # the image's entrypoint when None, as in Kubernetes
    args: list[str]
    probes: list[Probe]
    ports: dict[str, int]
    run_as: tuple[int, int] | None
    read_only_root: bool
    pre_stop_sleep_s: float = 0

    def run_args(self, pod: str) -> list[str]:
        """`podman run`'s arguments for this container in the pod (mounts of Secrets under SECRETS/)."""
        entrypoint = ["--entrypoint", json.dumps(self.command)] if self.command else []
        return ["--name", f"{pod}-{self.name}", "--pod", pod, *self.options,
                *(f"--env={key}={value}" for key, value in self.env.items()), *entrypoint, self.image, *self.args]


@dataclass(frozen=True)
class Pod:
    name: str
    kind: str  # of the workload it comes from: Deployment, StatefulSet, Rollout or CronJob
    workload: str
    labels: dict[str, str]
    containers: list[Container]
    grace_period_s: int
    volumes: dict[str, int | None]  # podman volume -> the fsGroup to give it to
    secret_dirs: dict[str, tuple[str, dict[str, str], int, int | None]]  # folder -> secret, {key: path}, mode, group


@dataclass
class Service:
    name: str
    ports: list[tuple[int, int]]  # (service port, target port)
    pods: list[str]


@dataclass
class Plan:
    network: str
    pods: list[Pod] = field(default_factory=list)
    jobs: dict[str, Pod] = field(default_factory=dict)  # CronJob name -> its pod, run on demand
    services: list[Service] = field(default_factory=list)
    adaptations: list[str] = field(default_factory=list)
    not_exercised: list[str] = field(default_factory=list)

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods if p.name == name)

    def pods_of(self, workload: str) -> list[Pod]:
        return [p for p in self.pods if p.workload == workload]


def make_plan(objects: list[dict], secrets: dict[str, dict[str, str]], images: dict[str, str],
              network: str = "fintech", max_replicas: int | None = None) -> Plan:
    """`images`: an image the manifests name -> the local image to run instead (a tag of the one
    built here); public images of STAND_INS are replaced without being named. `max_replicas`: at
    most this many pods per workload (said in the adaptations)."""
    plan = Plan(network=network)
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    context = _Context(plan, config_maps, secrets, images)
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "Rollout" and "workloadRef" in obj["spec"]:
            wrapped = obj["spec"]["workloadRef"]["name"]
            plan.adaptations.append(f"Rollout {name}: its pods are those of the Deployment {wrapped} it wraps; no canary steps")
        elif kind in WORKLOADS:
            replicas = obj["spec"].get("replicas", 1)
            if max_replicas is not None and replicas > max_replicas:
                plan.adaptations.append(f"{kind} {name}: {max_replicas} of its {replicas} replicas (this machine's size)")
                replicas = max_replicas
            claims = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
            for i in range(replicas):
                pod_name = f"{name}-{i}"
                plan.pods.append(context.pod(pod_name, kind, name, obj["spec"]["template"],
                                             {c: f"{c}-{pod_name}" for c in claims}))
        elif kind == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
            plan.jobs[name] = context.pod(f"{name}-once", kind, name, template, {})
            plan.adaptations.append(f"CronJob {name}: its jobTemplate runs once as a pod when asked, not on its schedule")
        elif kind in NOT_EXERCISED:
            plan.not_exercised.append(f"{kind} {name}")
        elif kind not in ("ConfigMap", "Service", "PersistentVolumeClaim"):
            raise PlanError(f"{kind} {name}: no step runs this kind")
    for obj in objects:
        if obj["kind"] == "Service":
            plan.services.append(_service(obj, plan))
    plan.adaptations.append("Services: a forwarder container per Service, named after it, passing each port to its pods' target port")
    plan.adaptations.append("Probes: run by the harness inside each container, on the manifest's paths, ports and timings")
    return plan


def _service(obj: dict, plan: Plan) -> Service:
    selector = obj["spec"].get("selector", {})
    pods = [p for p in plan.pods if selector and selector.items() <= p.labels.items()]
    ports = []
    for port in obj["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        if isinstance(target, str):
            numbers = {c.ports[target] for p in pods for c in p.containers if target in c.ports}
            if len(numbers) != 1:
                raise PlanError(f"Service {obj['metadata']['name']}: port name {target!r} is not one port of its pods")
            target = numbers.pop()
        ports.append((port["port"], target))
    return Service(obj["metadata"]["name"], ports, [p.name for p in pods])


@dataclass
class _Context:
    plan: Plan
    config_maps: dict[str, dict[str, str]]
    secrets: dict[str, dict[str, str]]
    images: dict[str, str]

    def pod(self, name: str, kind: str, workload: str, template: dict, claims: dict[str, str]) -> Pod:
        spec = template["spec"]
        unknown = set(spec) - POD_FIELDS_USED
        if unknown:
            raise PlanError(f"{workload}: pod fields no step runs: {sorted(unknown)}")
        security = spec.get("securityContext", {})
        fs_group = security.get("fsGroup")
        pod = Pod(name=name, kind=kind, workload=workload, labels=template["metadata"].get("labels", {}), containers=[],
                  grace_period_s=spec.get("terminationGracePeriodSeconds", 30), volumes={}, secret_dirs={})
        volumes = {}
        for volume in spec.get("volumes", []):
            volumes[volume["name"]] = self.volume(pod, volume, claims, fs_group)
        for volume_name, podman_volume in claims.items():
            volumes[volume_name] = ("volume", podman_volume)
            pod.volumes[podman_volume] = fs_group
        for container in spec.get("initContainers", []) or []:
            raise PlanError(f"{workload}: init container {container['name']}: no step runs init containers")
        for container in spec["containers"]:
            pod.containers.append(self.container(pod, container, security, volumes))
        return pod

    def volume(self, pod: Pod, volume: dict, claims: dict[str, str], fs_group: int | None) -> tuple[str, str]:
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            pod.volumes[claim] = fs_group
            return ("volume", claim)
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            return ("tmpfs", f"tmpfs-mode=1777{',tmpfs-size=' + _bytes(size) if size else ''}")
        if "secret" in volume:
            secret = volume["secret"]
            name = secret["secretName"]
            data = self.secret(name)
            items = {i["key"]: i["path"] for i in secret.get("items", [])} or {k: k for k in data}
            folder = f"{pod.name}/{volume['name']}"
            pod.secret_dirs[folder] = (name, items, secret.get("defaultMode", 0o644), fs_group)
            return ("secret", folder)
        raise PlanError(f"{pod.workload}: volume {volume['name']}: no step runs {sorted(set(volume) - {'name'})}")

    def secret(self, name: str) -> dict[str, str]:
        if name not in self.secrets:
            raise PlanError(f"Secret {name} is referenced but was not given")
        return self.secrets[name]

    def container(self, pod: Pod, container: dict, pod_security: dict, volumes: dict) -> Container:
        security = {**pod_security, **container.get("securityContext", {})}
        image = self.image(container["image"])
        env = self.environment(pod, container)
        options = []
        run_as = None
        if "runAsUser" in security:
            run_as = (security["runAsUser"], security.get("runAsGroup", security["runAsUser"]))
            options += ["--user", f"{run_as[0]}:{run_as[1]}"]
        if "fsGroup" in security:
            options += ["--group-add", str(security["fsGroup"])]
        read_only = bool(security.get("readOnlyRootFilesystem"))
        if read_only:  # and no writable /tmp, /run of podman's own: only the pod's volumes
            options += ["--read-only", "--read-only-tmpfs=false"]
        for capability in security.get("capabilities", {}).get("drop", []):
            options += ["--cap-drop", capability]
        for capability in security.get("capabilities", {}).get("add", []):
            options += ["--cap-add", capability]
        if security.get("allowPrivilegeEscalation") is False:
            options += ["--security-opt", "no-new-privileges"]
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            options += ["--memory", _bytes(limits["memory"])]
        if "cpu" in limits:
            options += ["--cpus", str(_cpus(limits["cpu"]))]
        for mount in container.get("volumeMounts", []):
            kind, source = volumes[mount["name"]]
            read_only_mount = mount.get("readOnly", False) or kind == "secret"
            if "subPath" in mount:
                raise PlanError(f"{pod.workload}: mount {mount['name']}: subPath is not run here")
            if kind == "tmpfs":
                options += ["--mount", f"type=tmpfs,destination={mount['mountPath']},{source}"]
            elif kind == "volume":
                options += ["--mount", (f"type=volume,source={source},destination={mount['mountPath']}"
                                        f"{',ro=true' if read_only_mount else ''}")]
            else:  # the harness writes the folder under its secrets root and names it SECRETS/<folder>
                options += ["--mount", f"type=bind,source=SECRETS/{source},destination={mount['mountPath']},ro=true"]
        if "workingDir" in container:
            options += ["--workdir", container["workingDir"]]
        command = container.get("command")
        ports = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])}
        probes = [self.probe(kind, container[f"{kind}Probe"], ports) for kind in ("startup", "readiness", "liveness")
                  if f"{kind}Probe" in container]
        pre_stop = container.get("lifecycle", {}).get("preStop", {})
        return Container(name=container["name"], image=image, options=options, env=env,
                         command=[_expand(word, env) for word in command] if command else None,
                         args=[_expand(a, env) for a in container.get("args", [])], probes=probes, ports=ports,
                         run_as=run_as, read_only_root=read_only,
                         pre_stop_sleep_s=pre_stop.get("sleep", {}).get("seconds", 0))

    def image(self, image: str) -> str:
        if image in self.images:
            return self.images[image]
        repository = image.split(":")[0]  # a public image: no registry host in its name
        if repository in STAND_INS:
            self.plan.adaptations.append(f"image {image}: the stand-in {STAND_INS[repository]} (Debian's package; no registry here)")
            return STAND_INS[repository]
        raise PlanError(f"image {image}: not built here")

    def environment(self, pod: Pod, container: dict) -> dict[str, str]:
        """The container's environment as the kubelet makes it: envFrom first, then env in order,
        $(NAME) expanded from what is already set."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.config_maps[source["configMapRef"]["name"]])
            elif "secretRef" in source:
                env.update(self.secret(source["secretRef"]["name"]))
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = _expand(item["value"], env)
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = self.secret(ref["name"])[ref["key"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[item["name"]] = self.config_maps[ref["name"]][ref["key"]]
            elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[item["name"]] = pod.name
            else:
                raise PlanError(f"{pod.workload}: env {item['name']}: no step gives {source}")
        return env

    @staticmethod
    def probe(kind: str, probe: dict, ports: dict[str, int]) -> Probe:
        def port(value):
            return ports[value] if isinstance(value, str) else value

        if "httpGet" in probe:
            action = ("http", str(port(probe["httpGet"]["port"])), probe["httpGet"].get("path", "/"))
        elif "tcpSocket" in probe:
            action = ("tcp", str(port(probe["tcpSocket"]["port"])))
        else:
            action = ("exec", *probe["exec"]["command"])
        return Probe(kind, action, probe.get("initialDelaySeconds", 0), probe.get("periodSeconds", 10),
                     probe.get("timeoutSeconds", 1), probe.get("failureThreshold", 3))


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(NAME): the value of NAME if it is set, else left as written; $$ is a $."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), value)


def _bytes(quantity: str) -> str:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
    if not match or match[2] not in units | {"": 1}:
        raise PlanError(f"quantity {quantity!r}: not understood")
    return str(int(match[1]) * (units[match[2]] if match[2] else 1))


def _cpus(quantity) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)
