"""The promotion gates, on evidence written by the service's own metric code and read back
from the Prometheus text format, as `make promote` reads it from /metrics."""

import numpy as np
import pytest
from prometheus_client import generate_latest

from bentos.metrics import record_batch, record_failure
from core.registry import CHALLENGER, CHAMPION
from rollout.promotion import decide, judge, psi, read_evidence
from rollout.settings import GateSettings

GATES = GateSettings(min_predictions=200)
QUALITY_OK = {"metric": "pr_auc", "champion": 0.57, "challenger": 0.58}


def scores(rng, n: int, shift: float = 0.0) -> list[dict]:
    return [{"customer_id": f"C{i}", "churn_probability": float(p)} for i, p in enumerate(rng.beta(1 + shift * 8, 12, n))]


def unknown(n: int, start: int = 0) -> list[dict]:
    return [{"customer_id": f"C{i}", "error": "unknown_customer"} for i in range(start, start + n)]


def evidence_for(champion: str, challenger: str, good_rows: int, shift: float = 0.0, failing_rows: int = 0,
                 unknown_rows: tuple[int, int] = (0, 0)):
    """Record both versions' batches (as the model services do) and read the exposition back;
    `unknown_rows`: rows of unknown customers in the champion's and the challenger's batches."""
    rng = np.random.default_rng(int(champion))
    for _ in range(4):
        record_batch("churn", champion, CHAMPION, scores(rng, 250) + unknown(unknown_rows[0] // 4), 0.010)
        record_batch("churn", challenger, CHALLENGER, scores(rng, good_rows // 4, shift) + unknown(unknown_rows[1] // 4), 0.011)
    if failing_rows:
        record_failure("churn", challenger, CHALLENGER, failing_rows)
    return read_evidence(generate_latest().decode(), "churn", champion, challenger)


def test_a_challenger_like_the_champion_passes_every_gate():
    gates = judge(evidence_for("101", "102", good_rows=1000), QUALITY_OK, GATES)
    assert [g.name for g in gates] == ["evidence", "error_rate", "unknown_customers", "p99_latency", "score_shift", "quality",
                                      "decision_flips"]
    assert decide(gates) == (True, [])


def test_a_challenger_that_errors_is_refused_on_the_error_rate():
    evidence = evidence_for("201", "202", good_rows=1000, failing_rows=100)
    assert evidence[CHALLENGER].failures == 100 and evidence[CHALLENGER].predictions == 1100
    assert decide(judge(evidence, QUALITY_OK, GATES)) == (False, ["error_rate"])


def test_a_challenger_that_knows_fewer_customers_is_refused_and_one_that_knows_as_many_is_not():
    """Unknown customers are part of any traffic: what counts is how many more the challenger meets."""
    as_many = evidence_for("601", "602", good_rows=1000, unknown_rows=(40, 40))
    assert as_many[CHAMPION].unknown == 40 and as_many[CHALLENGER].unknown_rate == pytest.approx(40 / 1040)
    assert decide(judge(as_many, QUALITY_OK, GATES)) == (True, [])
    fewer = evidence_for("603", "604", good_rows=1000, unknown_rows=(40, 200))
    gates = judge(fewer, QUALITY_OK, GATES)
    assert decide(gates) == (False, ["unknown_customers"])
    assert next(g for g in gates if g.name == "unknown_customers").figures == {"challenger": 200 / 1200, "champion": 40 / 1040}


def test_a_challenger_whose_scores_moved_is_refused_on_the_shift():
    gates = judge(evidence_for("301", "302", good_rows=1000, shift=1.0), QUALITY_OK, GATES)
    assert decide(gates) == (False, ["score_shift"])
    assert next(g for g in gates if g.name == "score_shift").figures["psi"] > 0.2


def test_a_worse_challenger_on_labelled_data_is_refused_on_quality():
    worse = {"metric": "pr_auc", "champion": 0.57, "challenger": 0.06}
    assert decide(judge(evidence_for("401", "402", good_rows=1000), worse, GATES)) == (False, ["quality"])


def test_without_enough_evidence_nothing_else_is_judged():
    gates = judge(evidence_for("501", "502", good_rows=100), QUALITY_OK, GATES)
    assert [(g.name, g.passed) for g in gates] == [("evidence", False)]


def test_no_labels_is_not_a_failure():
    gates = judge(evidence_for("601", "602", good_rows=1000), None, GATES)
    quality = next(g for g in gates if g.name == "quality")
    assert quality.passed is None and decide(gates) == (True, [])


def test_psi_is_zero_for_equal_distributions_and_grows_with_the_shift():
    base = {"a": 50, "b": 30, "c": 20}
    assert psi(base, {"a": 5, "b": 3, "c": 2}) == pytest.approx(0.0)
    assert 0 < psi(base, {"a": 45, "b": 33, "c": 22}) < psi(base, {"a": 20, "b": 30, "c": 50})
