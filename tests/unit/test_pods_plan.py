"""The step that turns an overlay's rendered manifests into what podman runs (pods/plan.py): every
workload becomes its pods, every difference from a cluster is bridged and said, the security of
each container is carried over whole. No podman needed: this reads `kubectl kustomize`'s output."""

import copy

import pytest

from pods.cluster import local_images, pod_containers, render
from pods.plan import STAND_INS, PlanError, make_plan

SECRETS = {"fintech-redis": {"password": "redis-pw"}, "fintech-postgres": {"password": "pg-pw"},
           "fintech-serving-api-keys": {"api_keys.json": "[]"}, "fintech-dashboard-credentials": {"api_key": "d"},
           "fintech-rollout-credentials": {"api_key": "r"},
           "fintech-mlflow-accounts": {"admin": "a" * 12, "writer": "w" * 12, "reader": "r" * 12}}


@pytest.fixture(scope="module")
def dev():
    return render("dev")


def images_of(objects) -> dict[str, str]:
    """The project's images the manifests name, as if each were built here under its own name."""
    named = {c["image"] for o in objects for c in pod_containers(o)}
    return {image: image for image in named if "/" in image.split(":")[0]}


def test_every_workload_becomes_its_pods_and_every_cronjob_a_job(dev):
    plan = make_plan(dev, SECRETS, images_of(dev))
    for obj in dev:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            pods = plan.pods_of(obj["metadata"]["name"])
            assert len(pods) == obj["spec"].get("replicas", 1) and pods[0].kind == obj["kind"]
        elif obj["kind"] == "CronJob":
            assert obj["metadata"]["name"] in plan.jobs
    assert {"HorizontalPodAutoscaler fintech-serving", "NetworkPolicy fintech-serving"} <= set(plan.not_exercised)


def test_each_container_keeps_its_manifests_user_read_only_root_and_dropped_capabilities(dev):
    plan = make_plan(dev, SECRETS, images_of(dev))
    for pod in plan.pods + list(plan.jobs.values()):
        for container in pod.containers:
            options = " ".join(container.options)
            assert container.run_as == (10001, 10001) and "--user 10001:10001" in options, pod.name
            assert "--read-only --read-only-tmpfs=false" in options, pod.name  # no writable /tmp of podman's own
            assert "--cap-drop ALL" in options and "--security-opt no-new-privileges" in options, pod.name


def test_the_environment_is_made_as_the_kubelet_makes_it(dev):
    objects = copy.deepcopy(dev)
    _serving(objects)["containers"][0]["env"] += [  # secretKeyRef, then $(NAME) expanded from it
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "fintech-postgres", "key": "password"}}},
        {"name": "URI", "value": "postgresql://mlflow:$(PW)@fintech-postgres:5432/mlflow"}]
    plan = make_plan(objects, SECRETS, images_of(objects))
    assert plan.pod("fintech-serving-0").containers[0].env["URI"] == "postgresql://mlflow:pg-pw@fintech-postgres:5432/mlflow"
    [serving] = plan.pod("fintech-serving-0").containers
    assert serving.env["ONLINE_STORE"] == "redis" and serving.env["REDIS_URL"] == "fintech-redis:6379"  # envFrom, then env
    [consumer] = plan.pod("fintech-stream-consumer-0").containers
    assert consumer.env["STREAM_CONSUMER"] == "fintech-stream-consumer-0"  # fieldRef metadata.name


def test_a_dollar_pair_is_a_literal_dollar_and_an_unknown_name_stays_as_written(dev):
    objects = copy.deepcopy(dev)
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "fintech-serving")
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] += [
        {"name": "A", "value": "$$(REDIS_URL)"}, {"name": "B", "value": "$(NOT_SET)"}]
    [serving] = make_plan(objects, SECRETS, images_of(objects)).pod("fintech-serving-0").containers
    assert serving.env["A"] == "$(REDIS_URL)" and serving.env["B"] == "$(NOT_SET)"


def test_services_reach_their_pods_target_ports_by_name(dev):
    plan = make_plan(dev, SECRETS, images_of(dev))
    serving = next(s for s in plan.services if s.name == "fintech-serving")
    assert serving.ports == [(80, 3000), (8001, 8001)] and serving.pods == ["fintech-serving-0"]


def test_secret_volumes_are_read_only_folders_with_the_manifests_items_mode_and_group(dev):
    plan = make_plan(dev, SECRETS, images_of(dev))
    pod = plan.pod("fintech-serving-0")
    assert pod.secret_dirs["fintech-serving-0/api-keys"] == ("fintech-serving-api-keys", {"api_keys.json": "api_keys.json"},
                                                             0o440, 10001)
    [serving] = pod.containers
    assert ("type=bind,source=SECRETS/fintech-serving-0/api-keys,destination=/etc/fintech/api-keys,ro=true"
            in serving.options)
    assert pod.volumes == {"fintech-data": 10001}  # the claim, given to the fsGroup


def test_probes_keep_the_manifests_ports_paths_and_deadlines(dev):
    plan = make_plan(dev, SECRETS, images_of(dev))
    [serving] = plan.pod("fintech-serving-0").containers
    probes = {p.kind: p for p in serving.probes}
    assert probes["startup"].action == ("http", "3000", "/health") and probes["startup"].deadline_s == 5 * 36
    assert probes["readiness"].action == ("http", "3000", "/ready") and probes["readiness"].timeout_s == 5
    [postgres] = plan.pod("fintech-postgres-0").containers
    assert postgres.probes[0].action == ("exec", "pg_isready", "-U", "mlflow", "-d", "mlflow")


def test_public_images_get_a_stand_in_that_is_said_and_the_projects_must_be_built_here(dev):
    plan = make_plan(dev, SECRETS, images_of(dev))
    [redis] = plan.pod("fintech-redis-0").containers
    assert redis.image == STAND_INS["redis"]
    assert any(line.startswith("image redis:") and "stand-in" in line for line in plan.adaptations)
    with pytest.raises(PlanError, match="not built here"):
        make_plan(dev, SECRETS, {})
    with pytest.raises(Exception, match="fintech-dashboard:0.1.0-dev: no image of registry.example.com/fintech/fintech-dashboard"):
        local_images(dev, ["registry.example.com/fintech/mlflow:3.17.2"])
    built = ["registry.example.com/fintech/fintech-serving:0.1.0"] + [i for i in images_of(dev) if "serving" not in i]
    mapping, notes = local_images(dev, built)
    assert notes == [("image registry.example.com/fintech/fintech-serving:0.1.0-dev: the one built here, "
                      "registry.example.com/fintech/fintech-serving:0.1.0")]
    assert mapping["registry.example.com/fintech/fintech-serving:0.1.0-dev"] == "registry.example.com/fintech/fintech-serving:0.1.0"


def test_what_no_step_runs_is_refused_not_skipped(dev):
    for change, message in [(lambda o: o.append({"kind": "DaemonSet", "metadata": {"name": "x"}}), "no step runs this kind"),
                            (lambda o: _serving(o)["containers"][0]["volumeMounts"][0].update(subPath="x"), "subPath"),
                            (lambda o: _serving(o).update(hostNetwork=True), "pod fields no step runs")]:
        objects = copy.deepcopy(dev)
        change(objects)
        with pytest.raises(PlanError, match=message):
            make_plan(objects, SECRETS, images_of(objects))
    with pytest.raises(PlanError, match="Secret fintech-redis"):
        make_plan(dev, {k: v for k, v in SECRETS.items() if k != "fintech-redis"}, images_of(dev))


def _serving(objects):
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "fintech-serving")["spec"]["template"]["spec"]


def test_prod_runs_the_deployments_its_rollouts_wrap_at_most_max_replicas_each():
    prod = render("prod")
    plan = make_plan(prod, SECRETS, images_of(prod), max_replicas=1)
    for rollout in (o for o in prod if o["kind"] == "Rollout"):
        wrapped = rollout["spec"]["workloadRef"]["name"]
        assert [p.name for p in plan.pods_of(wrapped)] == [f"{wrapped}-0"]
        assert f"Deployment {wrapped}: 1 of its 3 replicas (this machine's size)" in plan.adaptations
        assert any(line.startswith(f"Rollout {rollout['metadata']['name']}: its pods are those of") for line in plan.adaptations)
    assert len(make_plan(prod, SECRETS, images_of(prod)).pods_of("fintech-serving-churn")) == 3
