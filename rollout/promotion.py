"""Should the challenger become the champion? The evidence of the canary window and the gates.

Evidence comes from what the running service exports on /metrics (the same series a Prometheus
analysis would query), per model version and role: predictions and failures, the scoring
latency histogram, and the score histogram (segment counts for the segment model). The shadow
role's series count as the challenger's. Quality comes from the latest labelled data
(rollout/evaluation.py), where a family has labels.

    evidence = read_evidence(metrics_text, "churn", champion="1", challenger="2")
    gates = judge(evidence, quality, GateSettings())
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from core.histograms import quantile
from core.registry import CHALLENGER, CHAMPION, SHADOW
from rollout.settings import GateSettings

ROLES_OF = {CHAMPION: (CHAMPION,), CHALLENGER: (CHALLENGER, SHADOW)}
EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite


@dataclass
class VersionEvidence:
    version: str
    predictions: int = 0  # rows the version was asked to score
    failures: int = 0  # rows it failed on (outcome "error")
    unknown: int = 0  # rows of customers its features do not know (outcome "unknown_customer")
    latency_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count, live traffic
    shadow_latency_buckets: dict[float, float] = field(default_factory=dict)  # the same, shadow scoring
    score_bins: dict[str, float] = field(default_factory=dict)  # bin -> rows (not cumulative)

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.predictions if self.predictions else None

    @property
    def unknown_rate(self) -> float | None:
        return self.unknown / self.predictions if self.predictions else None

    @property
    def p99_ms(self) -> float | None:
        """Of live traffic: shadow runs share a busy thread and are slower than the version is.
        Only a challenger that answered no one is timed on its shadow runs."""
        p99 = quantile(sorted((self.latency_buckets or self.shadow_latency_buckets).items()), 0.99)
        return None if p99 is None else p99 * 1000

    def summary(self) -> dict:
        return {"version": self.version, "predictions": self.predictions, "failures": self.failures,
                "error_rate": self.error_rate, "unknown_customers": self.unknown, "unknown_rate": self.unknown_rate, "p99_ms": self.p99_ms, "scored_rows": sum(self.score_bins.values())}


def read_evidence(metrics_text: str, family: str, champion: str, challenger: str) -> dict[str, VersionEvidence]:
    """Per role, the sums of the version's series over its roles (and over workers, already summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    evidence = {CHAMPION: VersionEvidence(champion), CHALLENGER: VersionEvidence(challenger)}
    wanted = {(champion, role): CHAMPION for role in ROLES_OF[CHAMPION]}
    wanted.update({(challenger, role): CHALLENGER for role in ROLES_OF[CHALLENGER]})
    cumulative_scores: dict[str, dict[float, float]] = {CHAMPION: {}, CHALLENGER: {}}
    for metric in text_string_to_metric_families(metrics_text):
        for sample in metric.samples:
            labels = sample.labels
            if labels.get("model") != family or (labels.get("version"), labels.get("role")) not in wanted:
                continue
            e = evidence[wanted[(labels["version"], labels["role"])]]
            if sample.name == "fintech_predictions_total":
                e.predictions += int(sample.value)
                e.failures += int(sample.value) if labels["outcome"] == "error" else 0
                e.unknown += int(sample.value) if labels["outcome"] == "unknown_customer" else 0
            elif sample.name == "fintech_scoring_latency_seconds_bucket":
                buckets = e.shadow_latency_buckets if labels["role"] == SHADOW else e.latency_buckets
                buckets[float(labels["le"])] = buckets.get(float(labels["le"]), 0.0) + sample.value
            elif sample.name == "fintech_score_bucket":
                bins = cumulative_scores[wanted[(labels["version"], labels["role"])]]
                bins[float(labels["le"])] = bins.get(float(labels["le"]), 0.0) + sample.value
            elif sample.name == "fintech_segment_assignments_total":
                e.score_bins[labels["segment"]] = e.score_bins.get(labels["segment"], 0.0) + sample.value
    for role, bins in cumulative_scores.items():
        below = 0.0
        for le, count in sorted(bins.items()):
            evidence[role].score_bins[f"le_{le}"] = count - below
            below = count
    return evidence


def psi(expected: dict[str, float], actual: dict[str, float]) -> float | None:
    """Population stability index of two binned distributions: sum of (a - e) * ln(a / e)."""
    total_e, total_a = sum(expected.values()), sum(actual.values())
    if not total_e or not total_a:
        return None
    value = 0.0
    for key in set(expected) | set(actual):
        e = max(expected.get(key, 0.0) / total_e, EPSILON)
        a = max(actual.get(key, 0.0) / total_a, EPSILON)
        value += (a - e) * math.log(a / e)
    return value


@dataclass
class Gate:
    name: str
    passed: bool | None  # None: not applicable (e.g. no labels for this family)
    rule: str
    figures: dict

    def as_dict(self) -> dict:
        return asdict(self)


def judge(evidence: dict[str, VersionEvidence], quality: dict | None, gates: GateSettings,
          flips: dict | None = None) -> list[Gate]:
    """Every gate, in order; the challenger is promoted only if none fails. `flips`: the decision
    flips on the challenger's rows (rollout/flips.py), gated when gates.max_flip_rate is set."""
    champion, challenger = evidence[CHAMPION], evidence[CHALLENGER]
    enough = challenger.predictions >= gates.min_predictions
    out = [Gate("evidence", enough, f"challenger scored at least {gates.min_predictions} rows",
                {"challenger_predictions": challenger.predictions, "champion_predictions": champion.predictions})]
    if not enough:  # the other figures would be noise
        return out

    base_rate = champion.error_rate or 0.0
    out.append(Gate("error_rate", challenger.error_rate <= base_rate + gates.max_error_rate_increase,
                    f"challenger error rate <= champion's + {gates.max_error_rate_increase}",
                    {"challenger": challenger.error_rate, "champion": champion.error_rate}))

    # the split is by customer, so both versions see the same mix of ids: a challenger that knows
    # fewer of them reads features nobody wrote (a view applied but never materialized online)
    base_unknown = champion.unknown_rate or 0.0
    out.append(Gate("unknown_customers", challenger.unknown_rate <= base_unknown + gates.max_unknown_rate_increase,
                    f"challenger unknown-customer rate <= champion's + {gates.max_unknown_rate_increase}",
                    {"challenger": challenger.unknown_rate, "champion": champion.unknown_rate}))

    c99, b99 = challenger.p99_ms, champion.p99_ms
    latency_ok = c99 is not None and (b99 is None or c99 <= b99 * gates.max_p99_ratio)
    out.append(Gate("p99_latency", latency_ok, f"challenger p99 <= {gates.max_p99_ratio} x champion's",
                    {"challenger_ms": c99, "champion_ms": b99}))

    shift = psi(champion.score_bins, challenger.score_bins)
    out.append(Gate("score_shift", shift is not None and shift <= gates.max_score_psi,
                    f"PSI between the two score distributions <= {gates.max_score_psi}",
                    {"psi": shift, "champion_rows": sum(champion.score_bins.values()),
                     "challenger_rows": sum(challenger.score_bins.values())}))

    if quality is None:
        out.append(Gate("quality", None, "no labelled data for this family", {}))
    else:
        drop = quality["champion"] - quality["challenger"]
        out.append(Gate("quality", drop <= gates.max_quality_drop,
                        f"challenger {quality['metric']} >= champion's - {gates.max_quality_drop}", quality))
    out.append(flip_gate(flips, gates.max_flip_rate))
    return out


def flip_gate(flips: dict | None, limit: float | None) -> Gate:
    """The decision flips, as a gate when `limit` is set (n/a otherwise, its figures still shown)."""
    figures = {k: v for k, v in (flips or {}).items() if k in (
        "compared", "decision_flips", "flip_rate", "principal_change_rate", "skipped")}
    if limit is None:
        return Gate("decision_flips", None, "no gate (PROMOTE_MAX_FLIP_RATE unset): reported only", figures)
    rate = (flips or {}).get("flip_rate")
    return Gate("decision_flips", rate is not None and rate <= limit,
                f"share of the challenger's rows the champion decides otherwise <= {limit}", figures)


def decide(gates: list[Gate]) -> tuple[bool, list[str]]:
    failed = [g.name for g in gates if g.passed is False]
    return not failed, failed


def flips_text(flips: dict) -> str:
    """A sentence on the decision flips (rollout/flips.py)."""
    if flips.get("skipped"):
        return f"Decision flips: not counted ({flips['skipped']})."
    changes = ", ".join(f"{change}: {n}" for change, n in list(flips["changes"].items())[:6]) or "none"
    text = (f"Decision flips: on {flips['compared']:,} rows the challenger scored, the champion would have decided "
            f"otherwise on {flips['decision_flips']:,} ({figure(flips['flip_rate'])}; {changes}).")
    if flips.get("adverse_under_both"):
        text += (f" Of {flips['adverse_under_both']:,} rows adverse under both, {flips['principal_reasons_changed']:,} "
                 f"have other principal reasons ({figure(flips['principal_change_rate'])}).")
    return text


def figure(value) -> str:
    """A report's figure: four significant digits for a float."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
