"""Fraud rules as data (core/fraud_rules.toml): deny-lists and limits a transaction meets before the
fraud model's outcome stands. A rule that hits raises the outcome to its own (review or block).

    rules = load_rules()                       # the file the service reads, checked
    check = rules.checker(features)            # for a version that reads these features
    check("C0000001", {"country": "KP", ...}, row)   # [Rule("sanctioned-country", ...)]
    as_logged([hit.as_dict() for hit in hits])   # "sanctioned-country:block": the inference log's form
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.families import FAMILIES
from core.feature_sets import SERVICE_FEATURES
from core.realtime import REQUEST_FIELDS

RULES = Path(__file__).with_name("fraud_rules.toml")
RULE_OUTCOMES = ("review", "block")
TRANSACTION_FIELDS = tuple(name for name in REQUEST_FIELDS if name != "transaction_time")
FIELDS = {"customer_id", *TRANSACTION_FIELDS,
          *(name for service in FAMILIES["fraud"].feature_services for name in SERVICE_FEATURES[service])}


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the rule."""


@dataclass(frozen=True)
class Rule:
    name: str
    code: str
    field: str  # customer_id, a transaction field, or a feature of the version
    outcome: str  # review or block
    sentence: str
    deny: frozenset[str] | None = None  # hits on any of these values
    above: float | None = None  # hits on a greater value

    def hits(self, value) -> bool:
        if value is None:
            return False
        if self.deny is not None:
            return str(value) in self.deny
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False
        return not math.isnan(number) and number > self.above

    def as_dict(self) -> dict:
        return {"rule": self.name, "code": self.code, "outcome": self.outcome, "sentence": self.sentence}


@dataclass(frozen=True)
class Rules:
    version: int
    rules: tuple[Rule, ...]

    def checker(self, features: Sequence[str]) -> Callable[[str, dict, Sequence[float]], list[Rule]]:
        """A function of (customer id, transaction fields, the row of `features`) to the rules that
        hit, for a version reading `features`; a rule on a feature it does not read is left out."""
        position = {name: i for i, name in enumerate(features)}
        on_customer = [r for r in self.rules if r.field == "customer_id"]
        on_transaction = [r for r in self.rules if r.field in TRANSACTION_FIELDS]
        on_feature = [(r, position[r.field]) for r in self.rules if r.field in position and r.field not in TRANSACTION_FIELDS]

        def check(customer_id: str, transaction: dict, row: Sequence[float]) -> list[Rule]:
            hits = [r for r in on_customer if r.hits(customer_id)]
            hits += [r for r in on_transaction if r.hits(transaction.get(r.field))]
            hits += [r for r, i in on_feature if r.hits(row[i])]
            return hits

        return check


def load_rules(path: Path = RULES) -> Rules:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RulesError(f"cannot read the fraud rules {path}: {e}") from e
    if not isinstance(raw.get("version"), int):
        raise RulesError(f"{path}: `version` must be a whole number")
    rules, codes = [], set()
    for name, entry in raw.get("rules", {}).items():
        where = f"{path}: rule {name!r}"
        if entry.get("outcome") not in RULE_OUTCOMES:
            raise RulesError(f"{where}: `outcome` must be one of {', '.join(RULE_OUTCOMES)}, got {entry.get('outcome')!r}")
        if ("deny" in entry) == ("above" in entry):
            raise RulesError(f"{where}: give exactly one of `deny` (a list of values) or `above` (a number)")
        for key in ("code", "field", "sentence"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise RulesError(f"{where}: `{key}` must be a non-empty string")
        if entry["field"] not in FIELDS:
            raise RulesError(f"{where}: `field` {entry['field']!r} is neither customer_id, a transaction field nor a "
                             f"fraud feature")
        if entry["code"] in codes:
            raise RulesError(f"{where}: code {entry['code']!r} is given to another rule too")
        codes.add(entry["code"])
        if "deny" in entry and not isinstance(entry["deny"], list):
            raise RulesError(f"{where}: `deny` must be a list of values")
        if "above" in entry and not isinstance(entry["above"], int | float):
            raise RulesError(f"{where}: `above` must be a number")
        rules.append(Rule(name, entry["code"], entry["field"], entry["outcome"], entry["sentence"],
                          frozenset(str(v) for v in entry["deny"]) if "deny" in entry else None,
                          float(entry["above"]) if "above" in entry else None))
    return Rules(raw["version"], tuple(rules))


def as_logged(hits: Sequence[dict]) -> str:
    """A result's hits (Rule.as_dict) as the inference log keeps them: name:outcome, comma-separated
    ("" for none)."""
    return ",".join(f"{hit['rule']}:{hit['outcome']}" for hit in hits)


def logged_outcomes(text: str) -> list[str]:
    """The outcomes of the hits in as_logged's form."""
    return [item.rsplit(":", 1)[1] for item in text.split(",") if item]
