"""The prod overlay's pods under podman (tests/pods/conftest.py), one replica per workload: the
per-family serving Deployments (which Argo Rollouts wrap) start, pass their probes in time, run
unprivileged, and each answers its own family's routes and no other."""

import pytest

from tests.pods.conftest import API, assert_probed_in_time, assert_unprivileged, client, free_port, running
from tests.pods.test_dev import CALLS

pytestmark = pytest.mark.pods
FAMILY_ROUTES = {"churn": {"churn-score", "churn-batch", "explain"}, "fraud": {"fraud-detection"}, "segment": {"segment"}}


@pytest.fixture(scope="module")
def ports():
    return {f"fintech-serving-{family}": free_port() for family in FAMILY_ROUTES}


@pytest.fixture(scope="module")
def prod(tmp_path_factory, ports):
    yield from running("prod", tmp_path_factory.mktemp("pods-prod"), ports)


def test_every_prod_pod_passes_each_of_its_probes_within_the_manifests_deadline(prod):
    assert {p.workload for p in prod.plan.pods} >= set(ports_of := [f"fintech-serving-{f}" for f in FAMILY_ROUTES])
    assert all(len(prod.plan.pods_of(workload)) == 1 for workload in ports_of)
    assert_probed_in_time(prod)


def test_each_prod_container_runs_unprivileged(prod):
    assert_unprivileged(prod)


@pytest.mark.parametrize("family", FAMILY_ROUTES)
def test_each_familys_pod_serves_its_routes_and_no_other(prod, ports, family):
    with client(ports[f"fintech-serving-{family}"], prod.client_key) as serving:
        for route, (method, request) in CALLS.items():
            expected = 200 if route in FAMILY_ROUTES[family] else 404
            response = serving.request(method, f"{API}/{route}", **request)
            assert response.status_code == expected, (family, route, response.text[:300])
