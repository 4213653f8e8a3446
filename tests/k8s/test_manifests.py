"""The Kubernetes manifests, checked offline: every overlay renders, every object is valid for
the Kubernetes API of the version we support, and the pods are what we promise — probed on the
service's real routes, sized, hardened, pinned, given their credentials as read-only files, and
scaled on a metric the service exports; the dashboard reaches the services it is pointed at and,
by the NetworkPolicies, nothing else; every scheduled job runs a command the project's CLIs have,
in the jobs image, and the retraining cycles ask a Service of their family's pods, which they
may reach, at times that never overlap; in prod, the features job also runs on a KubeRay cluster
of its own, whose pods are hardened like the others, share the data volume at DATA_DIR and talk to
each other, the submitter and Redis only."""

import copy
import importlib
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path, PurePosixPath
from unittest import mock
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CUSTOM_GROUPS = ("argoproj.io/", "monitoring.coreos.com/", "ray.io/")
# Custom resources whose CRD schemas k8s/crd-schemas does not have: no npm package (nor a PyPI one)
# carries KubeRay's ray.io/v1 schemas. Their pod templates are validated as the Kubernetes API's.
UNSCHEMED_GROUPS = ("ray.io/",)
WORKLOADS = ("Deployment", "StatefulSet", "CronJob", "RayJob")
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.32"
# HPA metric -> the service's counter a custom-metrics adapter turns into it (rate per pod)
ADAPTER_METRICS = {"fintech_requests_per_second": "fintech_requests_total",
                   "fintech_stream_lag": "fintech_stream_lag"}  # external: the consumer group's lag, as is
FAMILIES = ("churn", "fraud", "segment")
UNPRIVILEGED = 10000  # the least uid and gid a container runs as: above any the images or the nodes define
API_KEYS_SECRET = "fintech-serving-api-keys"  # the hashes the service checks
ROLLOUT_SECRET = "fintech-rollout-credentials"  # the rollout jobs' own key (key: api_key)
DASHBOARD_SECRET = "fintech-dashboard-credentials"  # the dashboard's own key (key: api_key)
CREDENTIAL_SECRETS = {API_KEYS_SECRET, ROLLOUT_SECRET, DASHBOARD_SECRET}
DASHBOARD = "fintech-dashboard"  # the Streamlit dashboard's Deployment, Service and pod name


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed; it renders the kustomize overlays")
    done = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> list[dict]:
    return render(request.param)


def ray_pods(rayjob: dict) -> dict[str, dict]:
    """A RayJob's pod templates by role: "head", each worker group by its name, "submitter"."""
    cluster = rayjob["spec"].get("rayClusterSpec", {})
    found = {"head": cluster["headGroupSpec"]["template"]} if cluster else {}
    found |= {group["groupName"]: group["template"] for group in cluster.get("workerGroupSpecs", [])}
    if "submitterPodTemplate" in rayjob["spec"]:
        found["submitter"] = rayjob["spec"]["submitterPodTemplate"]
    return found


def pod_templates(objects: list[dict], kinds=WORKLOADS) -> list[tuple[str, dict]]:
    """(name, pod template) of every pod the workloads of `kinds` start: a Deployment's, a
    StatefulSet's or a CronJob's under its own name, a RayJob's as <rayjob>-<role> (ray_pods)."""
    found = []
    for o in objects:
        if o["kind"] not in kinds:
            continue
        name, spec = o["metadata"]["name"], o["spec"]
        if o["kind"] == "RayJob":
            found += [(f"{name}-{role}", template) for role, template in ray_pods(o).items()]
        else:
            found.append((name, spec["jobTemplate"]["spec"]["template"] if o["kind"] == "CronJob" else spec["template"]))
    return found


def pod_specs(objects: list[dict], kinds=WORKLOADS) -> list[dict]:
    return [template["spec"] for _, template in pod_templates(objects, kinds)]


def serving_deployments(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("fintech-serving")]


def named(objects: list[dict], kind: str, name: str) -> dict:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def containers(objects: list[dict]) -> list[dict]:
    return [c for spec in pod_specs(objects) for c in spec["containers"] + spec.get("initContainers", [])]


def settings(objects: list[dict]) -> dict:
    return named(objects, "ConfigMap", "fintech-serving-settings")["data"]


def secret_folder(spec: dict, container: dict, file: str) -> dict:
    """The Secret volume `file` is read from: mounted read-only as a folder, no subPath."""
    path = PurePosixPath(file)
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert len(mounts) == 1, f"{path.parent} is not a mounted folder: {container['volumeMounts']}"
    [mount] = mounts
    assert mount.get("readOnly") is True and "subPath" not in mount, mount
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    items = volume["secret"].get("items")
    assert items is None or path.name in {i["path"] for i in items}, volume
    return volume["secret"]


def is_custom(obj: dict) -> bool:
    return obj["apiVersion"].startswith(CUSTOM_GROUPS)


def has_crd_schema(obj: dict) -> bool:
    return is_custom(obj) and not obj["apiVersion"].startswith(UNSCHEMED_GROUPS)


def validate_custom(objects: list[dict]) -> subprocess.CompletedProcess:
    """Custom resources against their CRD schemas (k8s/crd-schemas, installed by `make crd-schemas`)."""
    node = shutil.which("node")
    if node is None or not (K8S / "crd-schemas" / "node_modules").exists():
        pytest.fail("node and `make crd-schemas` are needed to validate the custom resources")
    return subprocess.run([node, str(K8S / "crd-schemas" / "validate.mjs")], input=json.dumps(objects),
                          capture_output=True, text=True)


def test_every_object_is_valid_for_the_kubernetes_api(objects):
    for obj in objects:
        if not is_custom(obj):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_every_custom_resource_is_valid_for_its_crd(objects):
    custom = [o for o in objects if has_crd_schema(o)]
    checked = validate_custom(custom)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("valid: ") == len(custom) >= 2


def test_the_crd_validation_can_fail():
    rollout = copy.deepcopy(named(render("prod"), "Rollout", "fintech-serving-churn"))
    rollout["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = "ten"
    checked = validate_custom([rollout])
    assert checked.returncode == 1 and "setWeight must be integer" in checked.stdout


def test_the_validation_can_fail():
    deployment = next(o for o in render("dev") if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_probes_use_routes_the_service_has_on_the_port_it_listens_on(monkeypatch):
    from bentoml._internal.configuration.containers import BentoMLContainer

    from bentos.auth import OPEN
    from bentos.config import ServingSettings

    monkeypatch.setenv("AUTH_MODE", "off")  # the same routes; on, the import needs a credential source
    from bentos.service import app

    routes = set(app.openapi()["paths"]) | {"/livez", "/readyz", "/metrics"}  # the routes, and BentoML's own
    deployments = [named(render("dev"), "Deployment", "fintech-serving")] + serving_deployments(render("prod"))
    for deployment in deployments:
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": BentoMLContainer.http.port.get(), "grpc": ServingSettings().grpc_port}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            action = container[probe]["httpGet"]
            assert action["path"] in routes and action["port"] == "http", (probe, action)
            assert action["path"] in OPEN, (probe, action)  # the kubelet sends no credential
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_every_container_is_sized_pinned_and_hardened(objects):
    for spec in pod_specs(objects):
        assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"]:
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]) <= set(container["resources"]["limits"])
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]


def test_no_secret_is_written_in_the_manifests(objects):
    assert not [o for o in objects if o["kind"] == "Secret"]
    for container in containers(objects):
        for variable in container.get("env", []):
            if variable["name"].endswith("_FILE"):  # where a mounted secret is, not the secret
                assert variable["value"].startswith("/"), variable
            elif any(word in variable["name"] for word in ("TOKEN", "PASSWORD", "SECRET", "KEY")):
                assert "valueFrom" in variable and "value" not in variable, variable["name"]


def test_every_secret_is_mounted_read_only_as_a_folder(objects):
    """Read-only, and no subPath: the kubelet swaps a Secret's files in place, a subPath never sees it."""
    for spec in pod_specs(objects):
        secrets = {v["name"] for v in spec.get("volumes", []) if "secret" in v}
        for container in spec["containers"] + spec.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] in secrets:
                    assert mount.get("readOnly") is True and "subPath" not in mount, (container["name"], mount)


def test_every_container_runs_as_an_unprivileged_user_and_says_when_to_pull(objects):
    for spec in pod_specs(objects):
        pod = spec["securityContext"]
        assert pod["fsGroup"] >= UNPRIVILEGED  # the volumes are writable for that group
        for container in spec["containers"] + spec.get("initContainers", []):
            security = {**pod, **container.get("securityContext", {})}
            assert security["runAsNonRoot"] is True, container["name"]
            assert security["runAsUser"] >= UNPRIVILEGED and security["runAsGroup"] >= UNPRIVILEGED, container["name"]
            assert container.get("imagePullPolicy"), container["name"]


def test_every_prod_image_is_pinned_by_digest():
    for container in containers(render("prod")):
        assert re.fullmatch(r"[^@]+@sha256:[0-9a-f]{64}", container["image"]), container["image"]


def test_the_service_reads_its_api_keys_from_a_secret_folder_it_sees_change(objects):
    from core.api_keys import KEYS_FILE

    keys_file = settings(objects)["AUTH_API_KEYS_FILE"]
    assert settings(objects)["AUTH_MODE"] == "on" and PurePosixPath(keys_file).name == KEYS_FILE
    for deployment in serving_deployments(objects):
        spec = deployment["spec"]["template"]["spec"]
        [container] = spec["containers"]
        assert {"configMapRef": {"name": "fintech-serving-settings"}} in container["envFrom"]
        assert secret_folder(spec, container, keys_file)["secretName"] == API_KEYS_SECRET


def test_no_environment_variable_carries_an_api_key_or_an_admin_token(objects):
    from core.api_keys import KEY_ENV

    for container in containers(objects):
        env = container.get("env", [])
        assert not {v["name"] for v in env} & {KEY_ENV, "SERVING_ADMIN_TOKEN"}, container["name"]
        referenced = {v.get("valueFrom", {}).get("secretKeyRef", {}).get("name") for v in env}
        referenced |= {source.get("secretRef", {}).get("name") for source in container.get("envFrom", [])}
        assert not referenced & CREDENTIAL_SECRETS, container["name"]  # keys come as files only
    assert "fintech-serving-admin" not in json.dumps(objects)  # the admin token's Secret is gone


def test_store_passwords_are_read_from_files_wherever_the_program_can_read_one(objects):
    """Redis, PostgreSQL, MLflow (through libpq's PGPASSFILE, written from the Secret at start) and
    the platform's own code read theirs from a mounted Secret; none is in an environment variable."""
    for spec in pod_specs(objects):
        for container in spec["containers"]:
            env = container.get("env", [])
            assert not [v["name"] for v in env if "secretKeyRef" in v.get("valueFrom", {})], container["name"]
            assert "PASSWORD" not in " ".join(container.get("command", []) + container.get("args", [])), container["name"]
            for variable in env:
                if variable["name"].endswith("PASSWORD_FILE"):
                    assert secret_folder(spec, container, variable["value"])["secretName"] in (
                        "fintech-redis", "fintech-postgres", "fintech-mlflow-accounts")
    serving = serving_deployments(objects)[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "REDIS_URL", "value": "fintech-redis:6379"} in serving["env"]  # the password is not in it


def test_the_registry_needs_an_account_and_only_the_retraining_jobs_can_write(objects):
    """MLflow runs its basic-auth app with the accounts of one Secret; each pod that reads the
    registry mounts the one password it needs: the writer's for the retraining jobs, the reader's
    for serving, the dashboard and the drift reports. No other pod holds the admin's."""
    [mlflow] = named(objects, "Deployment", "fintech-mlflow")["spec"]["template"]["spec"]["containers"]
    assert "mlflow server --app-name basic-auth" in mlflow["command"][-1]
    assert "/opt/fintech/accounts.py --secrets /etc/fintech/mlflow-accounts" in mlflow["command"][-1]
    accounts = {}
    for name, template in pod_templates(objects):
        spec = template["spec"]
        for container in spec["containers"]:
            env = env_of(container)
            account = env.get("MLFLOW_TRACKING_USERNAME")
            if account is not None:
                secret = secret_folder(spec, container, env["MLFLOW_TRACKING_PASSWORD_FILE"])
                assert secret["secretName"] == "fintech-mlflow-accounts"
                assert [item["key"] for item in secret["items"]] == [account], name
                accounts[container["name"]] = account
            elif container["name"] != "mlflow":
                mounted = [v["secret"] for v in spec.get("volumes", []) if "secret" in v]
                assert all(v["secretName"] != "fintech-mlflow-accounts" for v in mounted), name
    assert {c: a for c, a in accounts.items() if a == "writer"} == {"retrain": "writer"}
    assert {"serving", "dashboard", "drift-report"} <= {c for c, a in accounts.items() if a == "reader"}


def runs(container: dict, module: str) -> bool:
    return f"-m {module}" in " ".join(container.get("command", []) + container.get("args", []))


def test_only_the_jobs_that_call_the_service_hold_a_key_and_they_read_it_from_a_file(objects):
    from core.api_keys import KEY_FILE_ENV

    for cronjob in (o for o in objects if o["kind"] == "CronJob"):
        spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for container in spec["containers"]:
            env = {v["name"]: v.get("value") for v in container.get("env", [])}
            if runs(container, "rollout"):  # /metrics, /admin/reload, /admin/whoami: the admin scope
                assert KEY_FILE_ENV in env, container["name"]
                assert secret_folder(spec, container, env[KEY_FILE_ENV])["secretName"] == ROLLOUT_SECRET
            else:
                assert KEY_FILE_ENV not in env, container["name"]
                assert ROLLOUT_SECRET not in json.dumps(spec), container["name"]


def test_the_serving_pods_may_reach_the_openid_provider_only_where_one_is_named(objects):
    issuer = settings(objects)["AUTH_ISSUER"]
    pod = serving_deployments(objects)[0]["spec"]["template"]["metadata"]["labels"]
    https = [rule for o in objects if o["kind"] == "NetworkPolicy" and selects(o["spec"]["podSelector"], pod)
             for rule in o["spec"].get("egress", []) if {"port": 443, "protocol": "TCP"} in rule.get("ports", [])]
    assert bool(https) == bool(issuer), issuer
    assert not issuer or issuer.startswith("https://")


def test_the_autoscalers_scale_on_cpu_and_a_metric_their_workload_exports(objects):
    """The serving workloads on their requests per pod; the stream consumer on the group's lag."""
    from tests.unit.test_monitoring_config import exported_series

    autoscalers = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    serving = [hpa for hpa in autoscalers if hpa["spec"]["scaleTargetRef"]["name"].startswith("fintech-serving")]
    assert len(serving) == len(serving_deployments(objects))  # one per serving workload
    [consumer] = [hpa for hpa in autoscalers if hpa not in serving]
    assert consumer["spec"]["scaleTargetRef"]["name"] == "fintech-stream-consumer"
    for hpa in autoscalers:
        kinds = {m["type"] for m in hpa["spec"]["metrics"]}
        assert kinds == ({"Resource", "Pods"} if hpa in serving else {"Resource", "External"})
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert ADAPTER_METRICS[metric["pods"]["metric"]["name"]] in exported_series()
            elif metric["type"] == "External":
                assert ADAPTER_METRICS[metric["external"]["metric"]["name"]] in exported_series()
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_long_running_pods_are_probed(objects):
    """The services, and the Ray nodes while their job runs (not its submitter, a Job's pod)."""
    ray_nodes = [template["spec"] for o in objects if o["kind"] == "RayJob"
                 for role, template in ray_pods(o).items() if role != "submitter"]
    for spec in pod_specs(objects, kinds=("Deployment", "StatefulSet")) + ray_nodes:
        for container in spec["containers"]:
            assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container), container["name"]
            ports = container.get("ports", [])
            declared = {p.get("name") for p in ports} | {p["containerPort"] for p in ports}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                action = container[probe].get("httpGet") or container[probe].get("tcpSocket")
                assert action is None or action["port"] in declared, (container["name"], probe, action)  # exec: no port


def test_the_registry_server_runs_no_job_consumers(objects):
    [mlflow] = [c for c in containers(objects) if c["name"] == "mlflow"]
    assert {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"} in mlflow["env"]


def test_the_registry_server_answers_the_host_every_client_calls_it_by(objects):
    """MLflow 3 refuses (403) a Host header outside MLFLOW_SERVER_ALLOWED_HOSTS, by default all but
    localhost and private IPs: a Service name must be listed (found when the pods first ran)."""
    from fnmatch import fnmatch
    from urllib.parse import urlsplit

    [mlflow] = [c for c in containers(objects) if c["name"] == "mlflow"]
    allowed = next(e["value"] for e in mlflow["env"] if e["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS").split(",")
    uris = {v for o in objects if o["kind"] == "ConfigMap" for k, v in o.get("data", {}).items() if k == "MLFLOW_TRACKING_URI"}
    uris |= {e["value"] for c in containers(objects) for e in c.get("env", []) if e["name"] == "MLFLOW_TRACKING_URI"}
    assert uris
    for uri in uris:
        assert any(fnmatch(urlsplit(uri).netloc, pattern) for pattern in allowed), uri
    assert not any(fnmatch("evil.example.com", pattern) for pattern in allowed)


def pod_labels(objects: list[dict]) -> list[dict]:
    return [template["metadata"]["labels"] for _, template in pod_templates(objects)]


def test_a_default_deny_covers_every_pod_of_the_namespace(objects):
    [deny] = [o for o in objects if o["kind"] == "NetworkPolicy" and not o["spec"]["podSelector"]]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]  # lets nothing through


def test_the_serving_pods_reach_the_issuer_on_443_on_public_addresses_only():
    [policy] = [o for o in render("prod") if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "fintech-serving-to-issuer"]
    [rule] = policy["spec"]["egress"]
    [block] = [to["ipBlock"] for to in rule["to"]]
    assert block["cidr"] == "0.0.0.0/0" and {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(block["except"])
    assert rule["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_every_selector_matches_pods_and_every_pod_has_a_network_policy(objects):
    labels = pod_labels(objects)
    # each pod's own: not the default deny, nor the policies of the clients an operator labels
    policies = [o for o in objects if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"] and not o["metadata"]["name"].endswith("-clients")]
    for obj in objects:
        selector = {"Service": lambda o: o["spec"]["selector"], "PodDisruptionBudget": lambda o: o["spec"]["selector"]["matchLabels"],
                    "NetworkPolicy": lambda o: o["spec"]["podSelector"].get("matchLabels")}.get(obj["kind"])
        if selector and selector(obj) is not None and not obj["metadata"]["name"].endswith("-clients"):
            assert any(selector(obj).items() <= pod.items() for pod in labels), obj["metadata"]["name"]
    for pod in labels:
        assert any(p["spec"]["podSelector"]["matchLabels"].items() <= pod.items() for p in policies), pod
    serving = named(objects, "NetworkPolicy", "fintech-serving")
    assert set(serving["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_the_cluster_rules_are_the_tested_rules():
    rules = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "alerts.yml").read_text())
    for overlay in OVERLAYS:
        assert named(render(overlay), "PrometheusRule", "fintech-serving")["spec"] == rules


def test_prometheus_scrapes_the_service_and_the_canary_is_judged_on_its_metrics():
    from bentos.auth import OPEN
    from tests.unit.test_monitoring_config import exported_series, named_metrics

    objects = render("prod")
    monitor = named(objects, "ServiceMonitor", "fintech-serving")
    assert "rollouts-pod-template-hash" in monitor["spec"]["podTargetLabels"]
    for family in FAMILIES:
        name = f"fintech-serving-{family}"
        service = named(objects, "Service", name)
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
        assert {e["path"] for e in monitor["spec"]["endpoints"]} <= OPEN  # Prometheus sends no credential
        rollout = named(objects, "Rollout", name)
        assert rollout["spec"]["workloadRef"]["name"] == name
        pod = named(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert rollout["spec"]["selector"]["matchLabels"].items() <= pod.items()
        assert named(objects, "HorizontalPodAutoscaler", name)["spec"]["scaleTargetRef"] == {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": name}
        analysis = rollout["spec"]["strategy"]["canary"]["analysis"]
        [template_ref] = analysis["templates"]
        assert {"name": "model", "value": family} in analysis["args"]
        template = named(objects, "AnalysisTemplate", template_ref["templateName"])
        queries = [m["provider"]["prometheus"]["query"] for m in template["spec"]["metrics"]]
        used = set().union(*map(named_metrics, queries))
        assert used and used <= exported_series()
        assert all("rollouts_pod_template_hash" in q for q in queries)
        # the score comparison needs a probability: churn and fraud have one, segment does not
        assert any("fintech_score_bucket" in q for q in queries) == (family != "segment")


def test_the_dashboard_ships_as_a_configmap_for_grafana():
    [dashboard] = [o for o in render("dev") if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "fintech-serving-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["fintech-serving.json"]) == json.loads(
        (ROOT / "monitoring" / "grafana" / "fintech-serving.json").read_text())


def test_prod_routes_each_scoring_path_to_pods_that_serve_its_family():
    """Ingress path -> Service -> the pods it selects -> their SERVING_FAMILIES: the family that
    answers the route (bentos/routes.py) must be served there, and only there."""
    from bentos.routes import ROUTES

    objects = render("prod")
    [ingress] = [o for o in objects if o["kind"] == "Ingress"]
    paths = {p["path"]: p["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}

    def families_behind(service_name: str) -> set[str]:
        selector = named(objects, "Service", service_name)["spec"]["selector"]
        served = set()
        for deployment in serving_deployments(objects):
            if selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items():
                env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
                served |= set(env.get("SERVING_FAMILIES", ",".join(FAMILIES)).split(","))
        return served

    for route in ROUTES:
        assert families_behind(paths[route.url]) == {route.family}, route.path
    assert "/" in paths and families_behind(paths["/"])  # the service routes reach a serving pod


def ingress_routes(ingress: dict, path: str) -> bool:
    """Whether a request for `path` reaches a backend (the Ingress API's Exact and Prefix matching)."""
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            prefix = p["path"].rstrip("/")
            if path == p["path"] or (p["pathType"] == "Prefix" and path.startswith(prefix + "/")):
                return True
    return False


def test_prod_routes_the_public_paths_and_neither_metrics_nor_admin():
    from bentos.routes import ROUTES

    [ingress] = [o for o in render("prod") if o["kind"] == "Ingress"]
    for path in ("/", "/health", "/ready", "/models/status", "/docs", "/openapi.json", *(r.url for r in ROUTES)):
        assert ingress_routes(ingress, path), path
    for path in ("/metrics", "/admin/reload", "/admin/whoami", "/admin/anything"):
        assert not ingress_routes(ingress, path), path


# --- the dashboard, and who may talk to whom ------------------------------------------------------

def pods(objects: list[dict]) -> list[dict]:
    """Every pod template of the overlay: its name (pod_templates), its labels and its containers."""
    return [{"name": name, "labels": template["metadata"]["labels"], "containers": template["spec"]["containers"]}
            for name, template in pod_templates(objects)]


def pod_port(pod: dict, port: int | str) -> int | None:
    """The number of a port the pod's containers declare (by name or number); None if none does."""
    for container in pod["containers"]:
        for p in container.get("ports", []):
            if port in (p.get("name"), p["containerPort"]):
                return p["containerPort"]
    return None


def env_of(container: dict) -> dict[str, str]:
    return {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}


def families_served(pod: dict) -> set[str]:
    [container] = pod["containers"]
    return set(env_of(container).get("SERVING_FAMILIES", ",".join(FAMILIES)).split(","))


def the_dashboard(objects: list[dict]) -> tuple[dict, dict]:
    """The dashboard's pod template and its one container."""
    [pod] = [p for p in pods(objects) if p["name"] == DASHBOARD]
    [container] = pod["containers"]
    return pod, container


def dashboard_settings(container: dict):
    """The settings the dashboard's code reads from the container's environment, and nothing else's."""
    from core.settings import Settings
    from dashboard.settings import DashboardSettings

    env = env_of(container)
    with tempfile.NamedTemporaryFile("w") as password, mock.patch.dict(os.environ, env, clear=True):
        if "MLFLOW_TRACKING_PASSWORD_FILE" in env:  # the mounted Secret's file, read with the settings
            password.write("a registry password")
            password.flush()
            os.environ["MLFLOW_TRACKING_PASSWORD_FILE"] = password.name
        return Settings(), DashboardSettings()


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions are not evaluated here
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_selects(peer: dict, pod: dict, namespace: str) -> bool:
    """Whether a NetworkPolicy peer names a pod of the overlay's namespace (an address range: any pod)."""
    if "ipBlock" in peer:
        return True
    if "namespaceSelector" in peer and not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
        return False
    return selects(peer.get("podSelector", {}), pod["labels"])


def port_admitted(rule: dict, destination: dict, port: int) -> bool:
    """Whether a rule admits TCP to `port`; a named port is the destination pod's."""
    if not rule.get("ports"):
        return True
    for p in rule["ports"]:
        assert "endPort" not in p, p
        if p.get("protocol", "TCP") == "TCP" and ("port" not in p or pod_port(destination, p["port"]) == port
                                                   or p["port"] == port):
            return True
    return False


def admitted(objects: list[dict], direction: str, subject: dict, peer: dict, destination: dict, port: int) -> bool:
    """Whether the NetworkPolicies that isolate `subject` in `direction` (Ingress or Egress) admit
    `peer` (the other end) on the destination's `port`; not isolated, everything is."""
    rules, peers = {"Ingress": ("ingress", "from"), "Egress": ("egress", "to")}[direction]
    isolating = [o for o in objects if o["kind"] == "NetworkPolicy" and selects(o["spec"]["podSelector"], subject["labels"])
                 and direction in o["spec"].get("policyTypes", ["Ingress"] + (["Egress"] if "egress" in o["spec"] else []))]
    if not isolating:
        return True
    return any(port_admitted(rule, destination, port)
               and (not rule.get(peers) or any(peer_selects(x, peer, policy["metadata"]["namespace"]) for x in rule[peers]))
               for policy in isolating for rule in policy["spec"].get(rules, []))


def connects(objects: list[dict], source: dict, destination: dict, port: int) -> bool:
    """Whether source may open a TCP connection to destination's port: its egress and the other's ingress."""
    return (admitted(objects, "Egress", source, destination, destination, port)
            and admitted(objects, "Ingress", destination, source, destination, port))


def backends(objects: list[dict], url: str) -> list[tuple[dict, int]]:
    """The pods a URL reaches through the Service it names, each with the port it lands on."""
    parts = urlsplit(url)
    assert parts.scheme == "http" and "." not in parts.hostname, url  # a Service of the pod's own namespace
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == parts.hostname]
    assert len(services) == 1, f"{url}: no Service {parts.hostname}"
    [service] = services
    ports = [p for p in service["spec"]["ports"] if p["port"] == (parts.port or 80)]
    assert len(ports) == 1, f"{url}: {parts.hostname} has no port {parts.port or 80}: {service['spec']['ports']}"
    target = ports[0].get("targetPort", ports[0]["port"])
    selector = service["spec"]["selector"]
    found = [(pod, pod_port(pod, target)) for pod in pods(objects) if selector.items() <= pod["labels"].items()]
    assert found and all(port is not None for _, port in found), f"{url}: no pod listens on {target}"
    return found


def urls_of(dashboard) -> list[str]:
    return [dashboard.service_url, *dashboard.family_urls.values()]


def test_the_dashboard_runs_once_and_listens_where_its_service_and_probes_point(objects):
    deployment = named(objects, "Deployment", DASHBOARD)
    assert deployment["spec"]["replicas"] == 1  # its sessions live in the process's memory
    pod, container = the_dashboard(objects)
    assert container["image"].split("@")[0].rsplit(":", 1)[0].endswith("/fintech-dashboard"), container["image"]
    command = container["command"]
    assert command[:3] == ["streamlit", "run", "dashboard/app.py"] and container["workingDir"] == "/app"
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags["--server.headless"] == "true" and flags["--browser.gatherUsageStats"] == "false"
    assert flags["--server.address"] == "0.0.0.0" and flags["--server.fileWatcherType"] == "none"
    assert pod_port(pod, "http") == int(flags["--server.port"]) == 8501
    [(backend, port)] = backends(objects, f"http://{DASHBOARD}:8501")
    assert backend["name"] == DASHBOARD
    assert port == 8501 and named(objects, "Service", DASHBOARD)["spec"]["ports"][0]["name"] == "http"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/_stcore/health", "port": "http"}, probe  # Streamlit's own
    assert env_of(container)["HOME"] == "/tmp"  # Streamlit writes $HOME/.streamlit on a read-only root
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    spec = deployment["spec"]["template"]["spec"]
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])


def test_the_dashboard_reads_the_data_and_the_registry_the_service_uses_and_writes_no_data(objects):
    _, container = the_dashboard(objects)
    data, _ = dashboard_settings(container)
    assert str(data.data_dir) == settings(objects)["DATA_DIR"]
    assert data.tracking_uri == settings(objects)["MLFLOW_TRACKING_URI"]
    spec = named(objects, "Deployment", DASHBOARD)["spec"]["template"]["spec"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(data.data_dir)]
    assert mount.get("readOnly") is True and "subPath" not in mount, mount
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    serving = serving_deployments(objects)[0]["spec"]["template"]["spec"]
    [serving_data] = [v for v in serving["volumes"] if v["name"] == "data"]
    assert volume["persistentVolumeClaim"]["claimName"] == serving_data["persistentVolumeClaim"]["claimName"]
    assert named(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])["spec"]["accessModes"] == [
        "ReadWriteMany"]  # mounted by the service's pods and the dashboard's at once


def test_the_dashboard_reads_its_api_key_from_its_own_secret_as_a_file(objects):
    from core.api_keys import KEY_ENV, KEY_FILE_ENV

    _, container = the_dashboard(objects)
    spec = named(objects, "Deployment", DASHBOARD)["spec"]["template"]["spec"]
    env = env_of(container)
    assert KEY_ENV not in env and KEY_FILE_ENV in env
    secret = secret_folder(spec, container, env[KEY_FILE_ENV])
    assert secret["secretName"] == DASHBOARD_SECRET
    assert {"key": "api_key", "path": PurePosixPath(env[KEY_FILE_ENV]).name} in secret["items"]
    others = [p for p in pod_specs(objects) if p is not spec]
    assert DASHBOARD_SECRET not in json.dumps(others)  # nobody else holds the dashboard's key


def test_the_dashboard_asks_each_family_at_a_service_whose_pods_serve_it(objects):
    _, container = the_dashboard(objects)
    _, dashboard = dashboard_settings(container)
    assert set(dashboard.family_urls) <= set(FAMILIES)
    for family in FAMILIES:
        url = dashboard.family_urls.get(family, dashboard.service_url)
        for pod, _ in backends(objects, url):
            assert family in families_served(pod), (family, url, pod["name"])
    behind_default = {pod["name"] for pod, _ in backends(objects, dashboard.service_url)}
    assert behind_default and all(name.startswith("fintech-serving") for name in behind_default)


def test_the_prod_dashboard_names_each_familys_own_service():
    objects = render("prod")
    _, dashboard = dashboard_settings(the_dashboard(objects)[1])
    assert dashboard.family_urls == {f: f"http://fintech-serving-{f}:80" for f in FAMILIES}
    for family, url in dashboard.family_urls.items():
        assert {families_served(pod) == {family} for pod, _ in backends(objects, url)} == {True}, url


def test_every_url_the_dashboard_is_given_names_a_service_whose_pods_it_may_reach(objects):
    pod, container = the_dashboard(objects)
    data, dashboard = dashboard_settings(container)
    for url in [data.tracking_uri, *urls_of(dashboard)]:
        for backend, port in backends(objects, url):
            assert connects(objects, pod, backend, port), (url, backend["name"], port)


def test_the_dashboard_reaches_the_serving_pods_and_the_registry_and_nothing_else(objects):
    dashboard, _ = the_dashboard(objects)
    reached = {(pod["name"], p["containerPort"]) for pod in pods(objects) if pod is not dashboard
               for c in pod["containers"] for p in c.get("ports", []) if connects(objects, dashboard, pod, p["containerPort"])}
    serving = {(d["metadata"]["name"], 3000) for d in serving_deployments(objects)}
    assert reached == serving | {("fintech-mlflow", 5000)}
    # outside its namespace: the cluster's DNS, and no address range
    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
           "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    egress = [rule for o in objects if o["kind"] == "NetworkPolicy" and "Egress" in o["spec"]["policyTypes"]
              and selects(o["spec"]["podSelector"], dashboard["labels"]) for rule in o["spec"].get("egress", [])]
    assert egress
    for rule in egress:
        assert rule.get("to") and rule.get("ports"), rule  # a rule without peers or ports opens everything
        for peer in rule["to"]:
            assert "ipBlock" not in peer, peer
            if "namespaceSelector" in peer:
                assert peer == dns and {p["port"] for p in rule["ports"]} == {53}, rule


def test_only_labelled_clients_reach_the_dashboard_and_only_on_its_port(objects):
    dashboard, _ = the_dashboard(objects)
    port = pod_port(dashboard, "http")
    client = {"name": "client", "labels": {"fintech-dashboard/client": "true"}, "containers": []}
    stranger = {"name": "stranger", "labels": {"app.kubernetes.io/name": "stranger"}, "containers": []}
    assert connects(objects, client, dashboard, port)
    assert not connects(objects, client, dashboard, 8080) and not connects(objects, stranger, dashboard, port)
    assert not [pod["name"] for pod in pods(objects) if connects(objects, pod, dashboard, port)]  # no workload is a client
    ingress = [rule for o in objects if o["kind"] == "NetworkPolicy" and "Ingress" in o["spec"]["policyTypes"]
               and selects(o["spec"]["podSelector"], dashboard["labels"]) for rule in o["spec"].get("ingress", [])]
    assert ingress and all(set(peer) == {"podSelector"} for rule in ingress for peer in rule["from"])  # no other namespace
    routed = json.dumps([o for o in objects if o["kind"] == "Ingress"])
    assert f'"{DASHBOARD}"' not in routed  # no Ingress routes to it: it has no login of its own


def test_the_reachability_check_can_fail():
    objects = render("dev")
    dashboard, _ = the_dashboard(objects)
    mlflow = next(p for p in pods(objects) if p["name"] == "fintech-mlflow")
    [serving] = [p for p in pods(objects) if p["name"] == "fintech-serving"]
    assert connects(objects, dashboard, mlflow, 5000) and connects(objects, dashboard, serving, 3000)
    assert not connects(objects, dashboard, serving, 5000)  # a port its egress does not name
    unlabelled = {**dashboard, "labels": {k: v for k, v in dashboard["labels"].items() if k != "fintech-serving/client"}}
    assert not connects(objects, unlabelled, serving, 3000)  # the serving pods' policy admits labelled clients only
    policy = named(objects, "NetworkPolicy", "fintech-mlflow")
    policy["spec"]["ingress"][0]["from"] = [p for p in policy["spec"]["ingress"][0]["from"]
                                            if p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] != DASHBOARD]
    assert not connects(objects, dashboard, mlflow, 5000)


def test_each_image_the_project_builds_is_the_one_its_overlays_run():
    built = dict(re.findall(r"^(\w*IMAGE) \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE))
    assert set(built) == {"IMAGE", "MLFLOW_IMAGE", "DASHBOARD_IMAGE", "JOBS_IMAGE"}
    assert set(built.values()) <= {c["image"].split("@")[0] for c in containers(render("prod"))}  # tag, then digest
    repositories = {image.rsplit(":", 1)[0] for image in built.values()}
    assert repositories <= {c["image"].rsplit(":", 1)[0] for c in containers(render("dev"))}


# --- the scheduled jobs: their image, their commands, the retraining cycles -----------------------

JOBS_IMAGE = "fintech-jobs"  # k8s/images/jobs: the image of every CronJob
SHELL_SEPARATORS = {";", "&&", "||", "|", "&"}
SHELL_KEYWORDS = {"do", "then", "else", "!", "{"}
WEEK = 7 * 24 * 60  # minutes


def cronjobs(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "CronJob"]


def job_pod_spec(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def jobs_image_pods(objects: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod spec) of every workload of the jobs image: the CronJobs and the stream consumer."""
    pods = [(c["metadata"]["name"], job_pod_spec(c)) for c in cronjobs(objects)]
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        if any(c["image"].split("@")[0].rsplit(":", 1)[0].endswith(f"/{JOBS_IMAGE}") for c in spec["containers"]):
            pods.append((deployment["metadata"]["name"], spec))
    return pods


def invocations(container: dict) -> list[tuple[str, list[str]]]:
    """Each `python -m <module> <args>` the container runs, as (module, args): its command, or each
    simple command of the script a `sh -c` command runs (split at ; && || | &, keywords dropped)."""
    words = container.get("command", []) + container.get("args", [])
    commands = [words]
    if words[:2] == ["sh", "-c"]:
        lexer = shlex.shlex(words[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands = [[]]
        for token in lexer:
            if token in SHELL_SEPARATORS:
                commands.append([])
            else:
                commands[-1].append(token)
    found = []
    for command in commands:
        while command and command[0] in SHELL_KEYWORDS:
            command = command[1:]
        if command[:2] == ["python", "-m"]:
            found.append((command[2], command[3:]))
    return found


def cli(module: str):
    """The click command `python -m <module>` runs: the Typer app its __main__ starts."""
    import typer

    assert f"from {module}.cli import app" in (ROOT / module / "__main__.py").read_text(), module
    return typer.main.get_command(importlib.import_module(f"{module}.cli").app)


def parsed(module: str, args: list[str]) -> tuple[str, dict]:
    """The subcommand `args` names and its parameters, as the CLI parses them: an unknown command,
    option or value fails here as it would in the pod (a shell variable is taken as its name)."""
    group = cli(module)
    name, *rest = args
    assert name in group.commands, f"python -m {module} has no command {name}: {sorted(group.commands)}"
    return name, group.commands[name].make_context(name, rest).params


def cycles(objects: list[dict]) -> list[tuple[dict, dict, str, dict]]:
    """(CronJob, container, rollout command, its parameters) of every job that runs a rollout command."""
    return [(cronjob, container, *parsed(module, args)) for cronjob in cronjobs(objects)
            for container in job_pod_spec(cronjob)["containers"]
            for module, args in invocations(container) if module == "rollout"]


def container_env(objects: list[dict], container: dict) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps' data, then its own variables."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= named(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
    return env | env_of(container)


def cron_field(text: str, low: int, high: int) -> set[int]:
    values = set()
    for part in text.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            first, last = low, high
        else:
            first, _, last = base.partition("-")
            first = int(first)
            last = int(last) if last else (high if step else first)
        values |= set(range(first, last + 1, int(step or 1)))
    return values


def starts(schedule: str) -> list[int]:
    """The minutes of the week (from Sunday 00:00) at which a schedule starts a Job."""
    minute, hour, day, month, weekday = schedule.split()
    assert day == "*" and month == "*", schedule  # weekly patterns only: every week alike
    return sorted(d % 7 * 1440 + h * 60 + m for d in cron_field(weekday, 0, 7)
                  for h in cron_field(hour, 0, 23) for m in cron_field(minute, 0, 59))


def windows(cronjob: dict) -> list[tuple[int, int]]:
    """When its Jobs may run: from each start to its deadline, in minutes of the week."""
    deadline = cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] / 60
    return [(start, start + deadline) for start in starts(cronjob["spec"]["schedule"])]


def overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return any(a[0] < b[1] + shift and b[0] + shift < a[1] for shift in (-WEEK, 0, WEEK))


def test_the_command_checks_can_fail():
    with pytest.raises(Exception, match="No such option: --trigger"):
        parsed("rollout", ["retrain-if-drifted", "churn", "--trigger", "drift"])  # it has no --trigger
    with pytest.raises(AssertionError, match="no command retrain-segment"):
        parsed("rollout", ["retrain-segment"])
    shell = {"command": ["sh", "-c", "x=1; for m in a b; do python -m rollout status $m || x=2; done; exit $x"]}
    assert invocations(shell) == [("rollout", ["status", "$m"])]
    assert starts("30 4 * * 1-6") == [d * 1440 + 270 for d in range(1, 7)] and starts("0 5 * * 7") == [300]
    assert overlap((WEEK - 60, WEEK + 60), (30, 90)) and not overlap((0, 60), (60, 120))


def test_every_cronjob_runs_the_jobs_image_and_commands_its_clis_have(objects):
    for cronjob in cronjobs(objects):
        for container in job_pod_spec(cronjob)["containers"]:
            image = container["image"].split("@")[0].rsplit(":", 1)[0]
            assert image.endswith(f"/{JOBS_IMAGE}"), (cronjob["metadata"]["name"], container["image"])
    for name, spec in jobs_image_pods(objects):
        for container in spec["containers"]:
            assert container["workingDir"] == "/app", name  # the image's WORKDIR, PYTHONPATH
            assert invocations(container), name
            for module, args in invocations(container):
                parsed(module, args)
    assert "fintech-stream-consumer" in dict(jobs_image_pods(objects))


def test_the_jobs_commands_are_entry_points_that_answer_from_the_repository_root():
    commands = {(module, args[0]) for overlay in OVERLAYS for _, spec in jobs_image_pods(render(overlay))
                for container in spec["containers"] for module, args in invocations(container)}
    assert {("rollout", "retrain"), ("rollout", "retrain-if-drifted"), ("streaming", "consume")} <= commands
    for module, command in sorted(commands):
        done = subprocess.run([sys.executable, "-m", module, command, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (module, command, done.stdout[-1000:] + done.stderr[-2000:])
        assert f"python -m {module} {command}" in done.stdout, done.stdout[:500]  # its own usage line


def test_the_cycles_run_weekly_and_on_drift_for_the_families_with_labels_and_no_other(objects):
    from rollout.retrain import SUPERVISED_FAMILIES

    assert set(SUPERVISED_FAMILIES) == set(FAMILIES) - {"segment"}  # segment has no labels
    found = cycles(objects)
    assert sorted((command, params["family"]) for _, _, command, params in found) == sorted(
        (command, family) for command in ("retrain", "retrain-if-drifted") for family in SUPERVISED_FAMILIES)
    for cronjob, _, command, params in found:
        name, family = cronjob["metadata"]["name"], params["family"]
        assert len(job_pod_spec(cronjob)["containers"]) == 1, name  # one cycle per pod
        assert params["dry_run"] is False, name
        if command == "retrain":
            assert name == f"fintech-retrain-{family}" and params["trigger"] == "schedule", name
        else:
            assert name == f"fintech-retrain-on-drift-{family}", name
    assert not [c for c in cronjobs(objects) if "segment" in c["metadata"]["name"]]


def test_the_drift_job_still_reports_on_every_family_and_fails_above_a_tenth(objects):
    [container] = job_pod_spec(named(objects, "CronJob", "fintech-drift-report"))["containers"]
    [(module, args)] = invocations(container)
    command, params = parsed(module, args)
    assert (module, command, params["model"], params["fail_above"]) == ("monitoring", "drift-report", "$model", 0.1)
    script = container["command"][2]
    assert re.search(r"for model in ([a-z ]+);", script)[1].split() == list(FAMILIES)
    assert "|| status=1" in script and script.endswith("exit $status")  # every report written, then the verdict


def test_each_cycle_asks_a_service_whose_pods_serve_its_family_on_a_port_it_exposes(objects):
    for cronjob, _, _, params in cycles(objects):
        url, family = params["service_url"], params["family"]
        assert url, cronjob["metadata"]["name"]  # not the CLI's default, 127.0.0.1:3000
        for pod, port in backends(objects, url):  # the Service, its port, pods listening on its target
            assert family in families_served(pod), (cronjob["metadata"]["name"], url, pod["name"])


def test_in_prod_each_cycle_asks_its_familys_own_service():
    objects = render("prod")
    for cronjob, _, _, params in cycles(objects):
        url, family = params["service_url"], params["family"]
        assert url == f"http://fintech-serving-{family}:80", cronjob["metadata"]["name"]
        assert {frozenset(families_served(pod)) for pod, _ in backends(objects, url)} == {frozenset({family})}


def test_the_cycles_reach_the_pods_they_ask_and_the_registry_and_nothing_else(objects):
    serving = {(d["metadata"]["name"], 3000) for d in serving_deployments(objects)}
    for cronjob, container, _, params in cycles(objects):
        [pod] = [p for p in pods(objects) if p["name"] == cronjob["metadata"]["name"]]
        tracking_uri = container_env(objects, container)["MLFLOW_TRACKING_URI"]
        for url in (params["service_url"], tracking_uri):
            for backend, port in backends(objects, url):
                assert connects(objects, pod, backend, port), (pod["name"], url, backend["name"], port)
        reached = {(other["name"], p["containerPort"]) for other in pods(objects) if other is not pod
                   for c in other["containers"] for p in c.get("ports", []) if connects(objects, pod, other, p["containerPort"])}
        assert reached == serving | {("fintech-mlflow", 5000)}, pod["name"]


def test_the_features_drift_and_retention_jobs_may_not_reach_the_service(objects):
    cycle_jobs = {cronjob["metadata"]["name"] for cronjob, *_ in cycles(objects)}
    others = [p for p in pods(objects) if p["name"] in {c["metadata"]["name"] for c in cronjobs(objects)} - cycle_jobs]
    assert {p["name"] for p in others} == {"fintech-features", "fintech-drift-report", "fintech-inference-log-retention"}
    for job in others:
        assert "fintech-serving/client" not in job["labels"], job["name"]
        for deployment in serving_deployments(objects):
            [serving] = [p for p in pods(objects) if p["name"] == deployment["metadata"]["name"]]
            assert not connects(objects, job, serving, 3000), (job["name"], serving["name"])


def test_a_cycle_has_the_time_its_search_and_evidence_need_is_not_retried_and_may_end_its_canary(objects):
    from rollout.retrain import RetrainSettings

    for cronjob, container, _, _ in cycles(objects):
        name, job = cronjob["metadata"]["name"], cronjob["spec"]["jobTemplate"]["spec"]
        with mock.patch.dict(os.environ, container_env(objects, container), clear=True):
            retrain = RetrainSettings()
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid", name
        assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never", name  # its own recovery
        # the search, the longest wait for evidence, and an hour for the rest (training set, fit, guard, gates)
        assert job["activeDeadlineSeconds"] >= (retrain.budget_min + retrain.evidence_timeout_min + 60) * 60, name
        assert job["template"]["spec"]["terminationGracePeriodSeconds"] >= 60, name  # SIGTERM ends the canary


def test_a_cycle_writes_to_the_data_volume_the_service_and_the_other_jobs_use(objects):
    serving = serving_deployments(objects)[0]["spec"]["template"]["spec"]
    [serving_data] = [v for v in serving["volumes"] if v["name"] == "data"]
    for cronjob, container, _, _ in cycles(objects):
        spec = job_pod_spec(cronjob)
        data_dir = container_env(objects, container)["DATA_DIR"]
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == data_dir]
        assert not mount.get("readOnly") and "subPath" not in mount, mount  # model cache, reports, audit log
        [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"] == serving_data["persistentVolumeClaim"], cronjob["metadata"]["name"]
        [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]  # HOME: the root is read-only
        assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])


def test_no_two_cycles_of_a_family_overlap_and_each_starts_after_the_features_and_reports_it_reads(objects):
    by_family = defaultdict(list)
    for cronjob, _, command, params in cycles(objects):
        by_family[params["family"]] += [(cronjob["metadata"]["name"], run) for run in windows(cronjob)]
    assert set(by_family) == {"churn", "fraud"}
    for family, family_runs in by_family.items():
        for (a, run_a), (b, run_b) in itertools.combinations(family_runs, 2):
            assert not overlap(run_a, run_b), (family, a, run_a, b, run_b)  # the second would find the lock taken
    features = windows(named(objects, "CronJob", "fintech-features"))
    drift = named(objects, "CronJob", "fintech-drift-report")
    drift_deadline = drift["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] / 60
    for cronjob, _, command, _ in cycles(objects):
        for run in windows(cronjob):
            assert not [f for f in features if overlap(run, f)], cronjob["metadata"]["name"]  # not while features are rewritten
            if command == "retrain-if-drifted":  # the report of the day, finished
                since_report = min((run[0] - start) % WEEK for start in starts(drift["spec"]["schedule"]))
                assert drift_deadline <= since_report < 24 * 60, (cronjob["metadata"]["name"], run)


# --- the features job on a KubeRay cluster (prod: k8s/components/ray) -----------------------------

RAYJOB = "fintech-features-ray"
GIB = 2**30
QUANTITY_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
KUBERAY_OPERATOR = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}


def quantity(text: str | int) -> float:
    """A Kubernetes quantity ("4", "500m", "16Gi") as a number."""
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()
    return float(number) * QUANTITY_UNITS[unit]


def the_rayjob(objects: list[dict]) -> dict:
    return named(objects, "RayJob", RAYJOB)


def ray_pod(objects: list[dict], role: str) -> dict:
    """The pods() entry of one of the RayJob's pods: "head", "features" (the workers), "submitter"."""
    [pod] = [p for p in pods(objects) if p["name"] == f"{RAYJOB}-{role}"]
    return pod


def jobs_image_ray() -> tuple[set[str], str]:
    """The extras and the version of the ray the jobs image installs (k8s/images/jobs/Dockerfile)."""
    extras, version = re.search(r"\bray(?:\[([\w,]+)\])?==([\w.]+)", (K8S / "images" / "jobs" / "Dockerfile").read_text()).groups()
    return set((extras or "").split(",")) - {""}, version


def as_pod_template(name: str, template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def test_prod_has_the_features_job_on_a_ray_cluster_of_its_own_on_demand_and_dev_does_not():
    """The daily run is the local CronJob in both; prod's RayJob is applied suspended, so the two
    never write the data folder at once unless someone resumes it in the CronJob's window."""
    prod, dev = render("prod"), render("dev")
    assert not [o for o in dev if o["apiVersion"].startswith("ray.io/")]
    assert "fintech-ray" not in json.dumps(dev)  # nor its policies, nor Redis's rule for its pods
    [rayjob] = [o for o in prod if o["apiVersion"].startswith("ray.io/")]
    assert rayjob["kind"] == "RayJob" and rayjob["metadata"]["name"] == RAYJOB
    assert set(ray_pods(rayjob)) == {"head", "features", "submitter"}
    assert {f"{RAYJOB}-{role}" for role in ray_pods(rayjob)} <= {name for name, _ in pod_templates(prod)}  # every pod check sees them
    spec = rayjob["spec"]
    assert spec["rayClusterSpec"] and "clusterSelector" not in spec  # a cluster made for the run...
    assert spec["shutdownAfterJobFinishes"] is True and 0 < spec["ttlSecondsAfterFinished"] <= 3600  # ...and deleted after it
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["suspend"] is True  # a run starts when it is resumed
    for objects in (prod, dev):
        daily = named(objects, "CronJob", "fintech-features")
        assert daily["spec"].get("suspend") is not True and daily["spec"]["concurrencyPolicy"] == "Forbid"


def test_the_ray_pods_are_valid_for_the_kubernetes_api():
    """KubeRay's CRDs take these templates as the API's PodTemplateSpec. The RayJob's own fields have
    no schema here (UNSCHEMED_GROUPS): see the expected failure below."""
    templates = pod_templates([the_rayjob(render("prod"))])
    assert len(templates) == 3
    for name, template in templates:
        kubernetes_validate.validate(as_pod_template(name, template), KUBERNETES_VERSION, strict=True)


def test_the_ray_pod_validation_can_fail():
    head = ray_pods(the_rayjob(render("prod")))["head"]
    head["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(as_pod_template("head", head), KUBERNETES_VERSION, strict=True)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="no KubeRay ray.io/v1 CRD schemas in k8s/crd-schemas: no npm (nor PyPI) package carries them")
def test_the_rayjob_is_valid_for_kuberays_crd():
    checked = validate_custom([the_rayjob(render("prod"))])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_hardening_checks_see_the_ray_pods():
    objects = render("prod")
    test_every_container_is_sized_pinned_and_hardened(objects)
    test_every_container_runs_as_an_unprivileged_user_and_says_when_to_pull(objects)
    [worker] = ray_pods(the_rayjob(objects))["features"]["spec"]["containers"]
    worker["securityContext"]["readOnlyRootFilesystem"] = False
    with pytest.raises(AssertionError):
        test_every_container_is_sized_pinned_and_hardened(objects)


def test_the_rayjob_runs_the_features_command_with_the_ray_engine_in_the_jobs_image():
    from core.settings import Settings

    objects = render("prod")
    rayjob = the_rayjob(objects)
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:2] == ["python", "-m"]
    command, params = parsed(words[2], words[3:])
    assert (words[2], command, params["engine"]) == ("training", "features", "ray")
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == jobs_image_ray()[1]
    for role, template in ray_pods(rayjob).items():
        for container in template["spec"]["containers"]:
            assert container["image"].split("@")[0].rsplit(":", 1)[0].endswith(f"/{JOBS_IMAGE}"), role
            assert container["workingDir"] == "/app", role  # the image's WORKDIR, PYTHONPATH
            assert "command" not in container and "args" not in container, role  # KubeRay's: ray start, ray job submit
    # the driver runs on the head (Ray's job supervisor), with the head's environment
    [head] = ray_pods(rayjob)["head"]["spec"]["containers"]
    with mock.patch.dict(os.environ, container_env(objects, head), clear=True):
        driver = Settings()
    assert driver.engine == "ray" and driver.partitions == int(env_of(head)["PARTITIONS"]) > 1


def test_the_jobs_image_has_rays_dashboard_for_the_job_api_and_the_health_route():
    """Without ray[default], `ray start --head` runs no dashboard: no job API for the submitter and
    the operator (8265), no /api/healthz for the probes on the dashboard agent."""
    extras, _ = jobs_image_ray()
    assert "default" in extras, extras


def test_the_rayjobs_entry_point_answers_help_from_the_repository_root():
    words = shlex.split(the_rayjob(render("prod"))["spec"]["entrypoint"])
    assert words[0] == "python"
    done = subprocess.run([sys.executable, *words[1:], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-2000:]
    assert "--engine" in done.stdout, done.stdout[:1000]


def test_every_ray_node_mounts_the_data_volume_at_data_dir_and_a_writable_tmp():
    """The driver on the head writes the partitions, the tasks on the workers read them and write
    their features beside them, by the same paths: the volume the service and the other jobs use,
    mounted at DATA_DIR on every node. Ray writes /tmp/ray, and the root is read-only."""
    objects = render("prod")
    data_dir = settings(objects)["DATA_DIR"]
    serving = serving_deployments(objects)[0]["spec"]["template"]["spec"]
    [serving_data] = [v for v in serving["volumes"] if v["name"] == "data"]
    claim = serving_data["persistentVolumeClaim"]["claimName"]
    assert named(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    for role, template in ray_pods(the_rayjob(objects)).items():
        spec = template["spec"]
        [container] = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]], role
        if role == "submitter":
            assert claim not in json.dumps(spec)  # it only submits
            continue
        assert container_env(objects, container)["DATA_DIR"] == data_dir, role
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == data_dir]
        assert not mount.get("readOnly") and "subPath" not in mount, (role, mount)
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim, role


def test_the_ray_workers_have_4_gib_a_cpu_and_the_head_runs_no_task():
    """A task holds one partition of customers' transactions: ~1.5 GB at 100 M transactions in 64."""
    cluster = the_rayjob(render("prod"))["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # its CPUs: GCS, dashboard, driver
    assert cluster["enableInTreeAutoscaling"] is False  # so the head needs no API token
    assert cluster["workerGroupSpecs"]
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        [container] = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        assert container["resources"]["requests"] == limits, group["groupName"]  # Ray starts with the limits
        assert quantity(limits["memory"]) >= 4 * GIB * quantity(limits["cpu"]), group["groupName"]
        # tasks take paths and return counts: the data goes through the volume, not the object store
        assert int(group["rayStartParams"]["object-store-memory"]) <= GIB, group["groupName"]


def test_the_ray_pods_talk_to_each_other_and_to_redis_and_the_submitter_to_the_job_api():
    objects = render("prod")
    head, workers, submitter = (ray_pod(objects, role) for role in ("head", "features", "submitter"))
    redis = next(p for p in pods(objects) if p["name"] == "fintech-redis")
    # head and workers on any port: besides the fixed ones, Ray's processes listen on ports picked at start
    for source, destination in itertools.product((head, workers), repeat=2):
        for port in (6379, 8265, 10001, 52365, 40123):
            assert connects(objects, source, destination, port), (source["name"], destination["name"], port)
    assert connects(objects, submitter, head, pod_port(head, "dashboard"))
    assert not connects(objects, submitter, head, 6379) and not connects(objects, submitter, workers, 52365)
    assert connects(objects, head, redis, 6379) and connects(objects, workers, redis, 6379)  # each task writes online
    assert not connects(objects, submitter, redis, 6379)
    others = [p for p in pods(objects) if not p["name"].startswith(f"{RAYJOB}-")]
    for pod in (head, workers, submitter):
        reached = {(other["name"], p["containerPort"]) for other in others for c in other["containers"]
                   for p in c.get("ports", []) if connects(objects, pod, other, p["containerPort"])}
        assert reached == (set() if pod is submitter else {("fintech-redis", 6379)}), pod["name"]  # not the service, nor MLflow
        for other in others:
            for port in (6379, 8265, 10001, 52365):
                assert not connects(objects, other, pod, port), (other["name"], pod["name"], port)


def test_outside_the_namespace_the_ray_pods_are_reached_by_the_kuberay_operator_and_reach_dns_only():
    """The operator polls the job's status on the head's job API; the workers find the head by the
    name of its Service. No address range either way."""
    objects = render("prod")
    ray = [ray_pod(objects, role) for role in ("head", "features", "submitter")]
    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
           "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"
                and any(selects(o["spec"]["podSelector"], pod["labels"]) for pod in ray)]
    for pod in ray:
        assert [p for p in policies if selects(p["spec"]["podSelector"], pod["labels"])
                and {"Ingress", "Egress"} <= set(p["spec"]["policyTypes"])], pod["name"]  # isolated both ways
    ingress = [rule for policy in policies for rule in policy["spec"].get("ingress", [])]
    egress = [rule for policy in policies for rule in policy["spec"].get("egress", [])]
    for rule, peers in [(rule, "from") for rule in ingress] + [(rule, "to") for rule in egress]:
        assert rule.get(peers), rule  # a rule without peers admits every address
        assert not [peer for peer in rule[peers] if "ipBlock" in peer], rule
    outside = [(peer, rule.get("ports")) for rule in ingress for peer in rule["from"] if "namespaceSelector" in peer]
    assert outside == [(KUBERAY_OPERATOR, [{"port": "dashboard", "protocol": "TCP"}])]
    for rule in egress:
        for peer in rule["to"]:
            if "namespaceSelector" in peer:
                assert peer == dns and {p["port"] for p in rule["ports"]} == {53}, rule


def test_the_inference_log_is_pruned_daily_after_the_drift_reports_read_it(objects):
    retention, drift = named(objects, "CronJob", "fintech-inference-log-retention"), named(objects, "CronJob", "fintech-drift-report")
    [container] = job_pod_spec(retention)["containers"]
    assert container["command"][:4] == ["python", "-m", "monitoring", "prune-log"] and "--days" in container["command"]
    minute, hour = (int(x) for x in retention["spec"]["schedule"].split()[:2])
    assert retention["spec"]["schedule"].split()[2:] == ["*", "*", "*"]  # daily
    assert (hour, minute) > tuple(int(x) for x in reversed(drift["spec"]["schedule"].split()[:2]))

