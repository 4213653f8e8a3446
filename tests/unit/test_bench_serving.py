"""The serving benchmark's own logic: the bodies it sends, the servers a run of some targets needs,
and the targets such a run can judge."""

import json

import pytest
import typer

from bentos.schemas import CustomerRequest, FraudRequest
from loadtests.bench_serving import ROUTES, chosen, met, ratios, server_of


@pytest.mark.parametrize("family, schema", [("churn", CustomerRequest), ("fraud", FraudRequest)])
def test_the_body_wrk_sends_is_the_body_the_other_generators_send_and_one_the_route_accepts(family, schema):
    before, after = ROUTES[family].around_id()
    body = json.loads(before + "C0000042" + after)
    assert body == ROUTES[family].body("C0000042")
    schema.model_validate(body)  # extra="forbid": a field the route does not know fails here, not as 422s in the rounds


def test_the_fraud_targets_are_sent_to_the_servers_of_the_service_and_of_the_naive_design():
    names = chosen("fraud", None)
    assert names == ["h_fraud_service", "i_fraud_naive"]
    assert [server_of(name) for name in names] == ["a_service", "b_naive"]


def test_only_keeps_the_named_targets_of_the_chosen_routes_and_refuses_unknown_names():
    assert chosen("churn,fraud", "i_fraud_naive, a_service") == ["a_service", "i_fraud_naive"]
    for routes, only in (("payments", None), ("churn,fraud", "z_nothing"), ("churn", "h_fraud_service")):
        with pytest.raises(typer.BadParameter):
            chosen(routes, only)


def _target(rps: float, p99: float, idle_p50: float, fixed_p99: float) -> dict:
    run = {"requests_per_s": rps, "p50_ms": 1.0, "p99_ms": p99, "non_2xx": 0, "socket_errors": 0}
    return {"rounds": [run], "saturation": run, "idle": {"p50_ms": idle_p50},
            "fixed_rate": {"p50_ms": 1.0, "p99_ms": fixed_p99, "failures": 0, "requests": 3000}}


def test_a_fraud_run_judges_the_fraud_targets_alone():
    names = ["h_fraud_service", "i_fraud_naive"]
    results = {"h_fraud_service": _target(4000, 9.0, 1.5, 6.0), "i_fraud_naive": _target(900, 90.0, 3.0, 20.0),
               "fraud_agreement": {"requests": 201, "agreeing": 200}}
    results["ratios_per_round"], results["ratios"] = ratios(results, names)
    assert results["ratios"] == {"h_over_i_throughput": 4.44}
    assert met(results, names, 300, 150) == {
        "h (fraud) at least 4x i's (naive fraud) throughput": True,
        "h's p99 at saturation no worse than i's": True,
        "h idle: p50 of a lone fraud request <= 3 ms": True,
        "h's p99 at 300 req/s <= 10 ms": True,
        "fraud: no non-2xx in any run (h, i)": True,
        "i answers h's fraud probability (within 1e-06), decision and version to every check request": False,
    }
