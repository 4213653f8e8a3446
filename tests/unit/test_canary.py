"""Champion/challenger routing and shadow scoring, with fake scorers (no BentoML, no registry)."""

import threading

import numpy as np
import pandas as pd
import pytest

from bentos.canary import UnknownVersion, choose_role, resolve_pin
from bentos.family import score_routed
from bentos.inference_log import InferenceLog
from bentos.shadow import ShadowRunner
from bentos.versions import LiveSet
from core.registry import CHALLENGER, CHAMPION, Plan
from scoring.base import FEATURES_KEY, UNKNOWN_CUSTOMER, UNKNOWN_VERSION, ModelInfo

CUSTOMERS = [f"C{i:06d}" for i in range(10_000)]


class FakeScorer:
    """Scores every customer `score`; remembers what it saw; may fail or block."""

    def __init__(self, version: str, role: str, score: float, fail: bool = False, gate: threading.Event | None = None,
                 knows: set[str] | None = None):
        self.info = ModelInfo("churn", version, role, "churn_v1")
        self.features = ["days_since_last_txn"]
        self.value, self.fail, self.gate, self.seen, self.knows = score, fail, gate, [], knows

    def score(self, requests, reasons=True, keep_features=False):
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail:
            raise RuntimeError("broken model")
        self.seen.extend(r["customer_id"] for r in requests)
        return [{"customer_id": r["customer_id"], "error": UNKNOWN_CUSTOMER, "model": self.info.as_dict()}
                if self.knows is not None and r["customer_id"] not in self.knows else
                {"customer_id": r["customer_id"], "churn_probability": self.value, "risk_level": "low",
                 "model": self.info.as_dict(), **({FEATURES_KEY: np.array([3.0])} if keep_features else {})} for r in requests]


def live_set(share: float, shadow: bool = False, challenger: FakeScorer | None = None) -> LiveSet:
    scorers = {CHAMPION: FakeScorer("1", CHAMPION, 0.1)}
    if challenger is not False:
        scorers[CHALLENGER] = challenger or FakeScorer("2", CHALLENGER, 0.9)
    plan = Plan("1", "2" if CHALLENGER in scorers else None, share, shadow)
    return LiveSet("churn", scorers, share, shadow, plan, loaded={})


@pytest.mark.parametrize("share", [1, 10, 50])
def test_the_split_lands_within_tolerance_of_the_setting(share):
    to_challenger = sum(choose_role("churn", c, share, True) == CHALLENGER for c in CUSTOMERS) / len(CUSTOMERS)
    # the binomial standard deviation over 10,000 customers is at most 0.5 points; allow 5 of them
    # (at 50% these ids land on 48.0%, 4 deviations off: a hash is only as even as chance)
    assert abs(to_challenger - share / 100) <= 0.025


def test_routing_is_sticky_and_a_larger_share_only_moves_customers_to_the_challenger():
    at_10 = {c for c in CUSTOMERS if choose_role("churn", c, 10, True) == CHALLENGER}
    assert at_10 == {c for c in CUSTOMERS if choose_role("churn", c, 10, True) == CHALLENGER}
    at_25 = {c for c in CUSTOMERS if choose_role("churn", c, 25, True) == CHALLENGER}
    assert at_10 < at_25


def test_no_challenger_or_no_share_means_champion_for_everyone():
    assert {choose_role("churn", c, 0, True) for c in CUSTOMERS[:500]} == {CHAMPION}
    assert {choose_role("churn", c, 100, False) for c in CUSTOMERS[:500]} == {CHAMPION}
    assert {choose_role("churn", c, 100, True) for c in CUSTOMERS[:500]} == {CHALLENGER}


def test_a_pin_names_a_role_or_a_registry_version():
    versions = {CHAMPION: "3", CHALLENGER: "4"}
    assert resolve_pin("challenger", versions) == CHALLENGER
    assert resolve_pin("3", versions) == CHAMPION and resolve_pin("v4", versions) == CHALLENGER
    with pytest.raises(UnknownVersion, match="'9' is not served"):
        resolve_pin("9", versions)


def test_each_request_is_answered_by_its_version_and_says_so():
    live = live_set(share=30)
    requests = [{"customer_id": c} for c in CUSTOMERS[:200]]
    results = score_routed(live, requests)
    for request, result in zip(requests, results):
        role = choose_role("churn", request["customer_id"], 30, True)
        assert result["customer_id"] == request["customer_id"] and result["model"]["role"] == role
        assert result["churn_probability"] == (0.9 if role == CHALLENGER else 0.1)


def test_a_pin_wins_over_the_split_and_an_unknown_pin_is_an_error_result():
    live = live_set(share=0)
    pinned, unknown = score_routed(live, [{"customer_id": "C1", "pin": "2"}, {"customer_id": "C2", "pin": "7"}])
    assert pinned["model"]["version"] == "2"
    assert unknown["error"] == UNKNOWN_VERSION and "'7' is not served" in unknown["detail"]


def test_a_failing_challenger_hands_its_requests_to_the_champion():
    live = live_set(share=100, challenger=FakeScorer("2", CHALLENGER, 0.9, fail=True))
    results = score_routed(live, [{"customer_id": c} for c in CUSTOMERS[:20]])
    assert {r["model"]["version"] for r in results} == {"1"}


def test_the_customers_a_challenger_does_not_know_are_answered_by_the_champion_and_counted_against_it():
    requests = [{"customer_id": c} for c in CUSTOMERS[:20]]
    knows_half = FakeScorer("2", CHALLENGER, 0.9, knows=set(CUSTOMERS[:10]))
    champion_knows_some = {CHAMPION: FakeScorer("1", CHAMPION, 0.1, knows=set(CUSTOMERS[:15]))}
    live = live_set(share=100, challenger=knows_half)
    live.scorers.update(champion_knows_some)
    before = outcomes("2", CHALLENGER)
    results = score_routed(live, requests)
    assert [r["model"]["version"] for r in results[:10]] == ["2"] * 10 and [r["churn_probability"] for r in results[:10]] == [0.9] * 10
    assert [r["model"]["version"] for r in results[10:15]] == ["1"] * 5 and all("error" not in r for r in results[10:15])
    assert [r["error"] for r in results[15:]] == [UNKNOWN_CUSTOMER] * 5  # unknown to both: the champion says so
    assert live.scorers[CHAMPION].seen == CUSTOMERS[10:20]
    after = outcomes("2", CHALLENGER)
    assert (after["ok"] - before["ok"], after["unknown_customer"] - before["unknown_customer"]) == (10, 10)


def outcomes(version: str, role: str) -> dict[str, float]:
    from prometheus_client import REGISTRY

    return {outcome: REGISTRY.get_sample_value("fintech_predictions_total", {"model": "churn", "version": version, "role": role,
                                                                             "outcome": outcome}) or 0.0
            for outcome in ("ok", "unknown_customer")}


def test_shadow_mode_never_changes_a_response(tmp_path):
    requests = [{"customer_id": c} for c in CUSTOMERS[:50]]
    without = score_routed(live_set(share=0, challenger=False), requests)
    for challenger in (FakeScorer("2", CHALLENGER, 0.9), FakeScorer("2", CHALLENGER, 0.9, fail=True)):
        runner = ShadowRunner("churn", tmp_path)
        with_shadow = score_routed(live_set(share=0, shadow=True, challenger=challenger), requests, runner)
        runner.drain()
        assert with_shadow == without
    assert challenger.fail  # the last one raised in the background, and the response did not notice


def test_shadow_scoring_does_not_hold_up_the_response_and_records_both_results(tmp_path):
    gate = threading.Event()
    challenger = FakeScorer("2", CHALLENGER, 0.9, gate=gate)
    runner = ShadowRunner("churn", tmp_path)
    results = score_routed(live_set(share=0, shadow=True, challenger=challenger), [{"customer_id": "C1"}], runner)
    assert results[0]["model"]["version"] == "1" and challenger.seen == []  # answered while the shadow waits
    gate.set()
    runner.drain()
    assert challenger.seen == ["C1"]
    [line] = [line for f in tmp_path.glob("churn-*.jsonl") for line in f.read_text().splitlines()]
    assert '"champion": 0.1' in line and '"challenger": 0.9' in line and '"challenger_version": "2"' in line


def test_every_prediction_is_logged_with_its_version_role_and_features_and_the_answer_is_unchanged(tmp_path):
    log = InferenceLog(tmp_path / "log", "churn", flush_s=60).start()  # nothing is written until asked
    runner = ShadowRunner("churn", tmp_path / "shadow", log)
    requests = [{"customer_id": c, "request_id": f"r{i}"} for i, c in enumerate(CUSTOMERS[:40])]
    results = score_routed(live_set(share=50, shadow=True), requests, runner, log)
    runner.drain()
    assert all(FEATURES_KEY not in r for r in results)  # the vectors never reach the caller
    assert log.backlog > 0 and not list((tmp_path / "log").rglob("*.parquet"))
    log.close()
    logged = pd.read_parquet(tmp_path / "log" / "churn")
    live = logged[logged["role"] != "shadow"].set_index("request_id").loc[[r["request_id"] for r in requests]]
    assert list(live["version"]) == [r["model"]["version"] for r in results]
    assert list(live["score"]) == [r["churn_probability"] for r in results]
    assert (live["days_since_last_txn"] == 3.0).all()
    champion_rows = sum(r["model"]["role"] == CHAMPION for r in results)
    assert (logged["role"] == "shadow").sum() == champion_rows and log.backlog == 0
