"""What the retention team does about a customer at risk, by the first reason of their churn score.

The table is deliberately small and readable: a feature family (matched by the start of the
feature's name), what it means when it raises the risk, and the action the team takes. Edit it to
match your own playbook; the churn page lists every row it holds.
"""

from __future__ import annotations

# (feature name prefixes, what the reason says, the action), first match wins
ACTIONS: list[tuple[tuple[str, ...], str, str]] = [
    (("days_since_last_txn", "recency_vs_gap", "gap_"), "Quiet for longer than usual",
     "Re-engagement message within 48 h, with a personal offer on their top category"),
    (("txn_count_", "active_days_", "active_weeks_", "count_trend_", "count_slope_"), "Using the account less often",
     "Cash-back boost on everyday spending for 30 days"),
    (("spend_", "avg_amount_", "avg_log_amount_"), "Spending less",
     "Relationship-manager call and a review of fees and rates"),
    (("share_", "distinct_categories_", "distinct_merchants_", "weekend_share_"), "Spending moving elsewhere",
     "Offer in the category whose share fell"),
    (("foreign_share_", "distinct_countries_", "night_share_"), "Travel or usage pattern changed",
     "Fee-free spending abroad for 3 months"),
    (("days_since_first_txn",), "Early in the relationship", "Onboarding follow-up call"),
]
DEFAULT = ("Other", "Review by the retention team")


def action_for(feature: str) -> tuple[str, str]:
    """(what the reason says, the action) for a churn reason's feature."""
    for prefixes, meaning, action in ACTIONS:
        if feature.startswith(prefixes):
            return meaning, action
    return DEFAULT
