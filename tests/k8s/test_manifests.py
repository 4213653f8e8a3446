"""The Kubernetes manifests, checked offline: every overlay renders, every object is valid for
the Kubernetes API of the version we support, and the pods are what we promise — probed on the
service's real routes, sized, hardened, pinned, given their credentials as read-only files, and
scaled on a metric the service exports."""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CUSTOM_GROUPS = ("argoproj.io/", "monitoring.coreos.com/")
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.32"
# HPA metric -> the service's counter a custom-metrics adapter turns into it (rate per pod)
ADAPTER_METRICS = {"fintech_requests_per_second": "fintech_requests_total"}
FAMILIES = ("churn", "fraud", "segment")
UNPRIVILEGED = 10000  # the least uid and gid a container runs as: above any the images or the nodes define
API_KEYS_SECRET = "fintech-serving-api-keys"  # the hashes the service checks
ROLLOUT_SECRET = "fintech-rollout-credentials"  # the rollout jobs' own key (key: api_key)
CREDENTIAL_SECRETS = {API_KEYS_SECRET, ROLLOUT_SECRET}


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


def pod_specs(objects: list[dict], kinds=("Deployment", "StatefulSet", "CronJob")) -> list[dict]:
    specs = []
    for o in objects:
        if o["kind"] in kinds:
            template = o["spec"]["jobTemplate"]["spec"]["template"] if o["kind"] == "CronJob" else o["spec"]["template"]
            specs.append(template["spec"])
    return specs


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
    custom = [o for o in objects if is_custom(o)]
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

    monkeypatch.setenv("AUTH_MODE", "off")  # the same routes; on, the import needs a credential source
    from bentos.service import app

    routes = set(app.openapi()["paths"]) | {"/livez", "/readyz", "/metrics"}  # the routes, and BentoML's own
    deployments = [named(render("dev"), "Deployment", "fintech-serving")] + serving_deployments(render("prod"))
    for deployment in deployments:
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": BentoMLContainer.http.port.get()}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            action = container[probe]["httpGet"]
            assert action["path"] in routes and action["port"] == "http", (probe, action)
            assert action["path"] in OPEN, (probe, action)  # the kubelet sends no credential
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_every_container_is_sized_pinned_and_hardened(objects):
    for spec in pod_specs(objects):
        assert spec["automountServiceAccountToken"] is False
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
    """Redis, PostgreSQL and the platform's own code read theirs from a mounted Secret; MLflow's
    server takes its database password only inside its backend URI, from the environment."""
    for spec in pod_specs(objects):
        for container in spec["containers"]:
            env = container.get("env", [])
            from_secrets = [v["name"] for v in env if "secretKeyRef" in v.get("valueFrom", {})]
            assert from_secrets == (["POSTGRES_PASSWORD"] if container["name"] == "mlflow" else []), container["name"]
            assert "PASSWORD" not in " ".join(container.get("command", []) + container.get("args", [])), container["name"]
            for variable in env:
                if variable["name"].endswith("PASSWORD_FILE"):
                    assert secret_folder(spec, container, variable["value"])["secretName"] in ("fintech-redis", "fintech-postgres")
    serving = serving_deployments(objects)[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "REDIS_URL", "value": "fintech-redis:6379"} in serving["env"]  # the password is not in it


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
    https = [rule for o in objects if o["kind"] == "NetworkPolicy"
             and o["spec"]["podSelector"]["matchLabels"].items() <= pod.items()
             for rule in o["spec"].get("egress", []) if {"port": 443, "protocol": "TCP"} in rule.get("ports", [])]
    assert bool(https) == bool(issuer), issuer
    assert not issuer or issuer.startswith("https://")


def test_the_autoscaler_scales_on_cpu_and_a_metric_the_service_exports(objects):
    from tests.unit.test_monitoring_config import exported_series

    autoscalers = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert len(autoscalers) == len(serving_deployments(objects))  # one per serving workload
    for hpa in autoscalers:
        kinds = {m["type"] for m in hpa["spec"]["metrics"]}
        assert kinds == {"Resource", "Pods"}
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert ADAPTER_METRICS[metric["pods"]["metric"]["name"]] in exported_series()
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_long_running_pods_are_probed(objects):
    for spec in pod_specs(objects, kinds=("Deployment", "StatefulSet")):
        for container in spec["containers"]:
            assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container), container["name"]


def test_the_registry_server_runs_no_job_consumers(objects):
    [mlflow] = [c for c in containers(objects) if c["name"] == "mlflow"]
    assert {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"} in mlflow["env"]


def pod_labels(objects: list[dict]) -> list[dict]:
    labels = []
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            labels.append(o["spec"]["template"]["metadata"]["labels"])
        elif o["kind"] == "CronJob":
            labels.append(o["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
    return labels


def test_every_selector_matches_pods_and_every_pod_has_a_network_policy(objects):
    labels = pod_labels(objects)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for obj in objects:
        selector = {"Service": lambda o: o["spec"]["selector"], "PodDisruptionBudget": lambda o: o["spec"]["selector"]["matchLabels"],
                    "NetworkPolicy": lambda o: o["spec"]["podSelector"]["matchLabels"]}.get(obj["kind"])
        if selector:
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
    answers the route (bentos/api.py) must be served there, and only there."""
    from bentos.api import ROUTES
    from bentos.config import API_PREFIX

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

    for route, family in ROUTES:
        assert families_behind(paths[f"{API_PREFIX}/{route}"]) == {family}, route
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
    from bentos.api import ROUTES
    from bentos.config import API_PREFIX

    [ingress] = [o for o in render("prod") if o["kind"] == "Ingress"]
    for path in ("/", "/health", "/ready", "/models/status", "/docs", "/openapi.json", *(f"{API_PREFIX}/{r}" for r, _ in ROUTES)):
        assert ingress_routes(ingress, path), path
    for path in ("/metrics", "/admin/reload", "/admin/whoami", "/admin/anything"):
        assert not ingress_routes(ingress, path), path
