"""The fraud rules file: the shipped one loads, and a file that cannot be used is refused naming the rule."""

import pytest

from core.rules import RULES, RulesError, as_logged, load_rules, logged_outcomes


def test_the_shipped_rules_load_with_unique_codes_and_outcomes_a_rule_may_set():
    rules = load_rules()
    assert rules.version >= 1 and rules.rules
    assert len({r.code for r in rules.rules}) == len(rules.rules)
    assert {r.outcome for r in rules.rules} <= {"review", "block"}


def test_a_checker_reads_the_customer_the_transaction_and_the_versions_own_features():
    rules = load_rules()
    v2 = rules.checker(["amount_log_z", "prev_txn_count_1h"])
    v1 = rules.checker(["amount_log_z"])
    transaction = {"amount": 20.0, "country": "GB"}
    assert v2("C1", transaction, [0.1, 2.0]) == []
    assert [r.name for r in v2("C1", {**transaction, "country": "KP"}, [0.1, 50.0])] == ["sanctioned-country", "velocity-1h"]
    assert v1("C1", transaction, [0.1]) == []  # v1 does not read the velocity feature: that rule cannot hit
    assert [r.name for r in v1("C1", {**transaction, "amount": 20_000.0}, [0.1])] == ["large-amount"]
    assert v2("C1", transaction, [0.1, float("nan")]) == []  # a missing value meets no limit


def test_hits_round_trip_through_the_logs_form():
    hits = [{"rule": "large-amount", "outcome": "review"}, {"rule": "sanctioned-country", "outcome": "block"}]
    assert as_logged(hits) == "large-amount:review,sanctioned-country:block"
    assert logged_outcomes(as_logged(hits)) == ["review", "block"] and logged_outcomes("") == []


DEVICE = '[rules.denied-device]\ncode = "RUL02"\nfield = "device_id"\ndeny = []\noutcome = "block"\n'


@pytest.mark.parametrize("old, new, named", [
    ('outcome = "block"', 'outcome = "decline"', "`outcome` must be one of review, block"),
    ("deny = []", "deny = []\nabove = 1", "exactly one of `deny`"),
    ('field = "device_id"', 'field = "shoe_size"', "`field` 'shoe_size'"),
    ('code = "RUL02"', 'code = "RUL01"', "code 'RUL01' is given to another rule too"),
])
def test_a_file_that_cannot_be_used_is_refused_naming_the_rule(tmp_path, old, new, named):
    text = RULES.read_text()
    assert DEVICE in text
    path = tmp_path / "rules.toml"
    path.write_text(text.replace(DEVICE, DEVICE.replace(old, new)))
    with pytest.raises(RulesError, match="denied-device") as refused:
        load_rules(path)
    assert named in str(refused.value)
