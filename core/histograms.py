"""Quantiles from Prometheus histogram buckets, as Prometheus's histogram_quantile computes them:
the service's JSON summary and the promotion gates read the same series the alerts do."""

from __future__ import annotations


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Quantile from cumulative histogram buckets (upper bound, count), interpolated as Prometheus does."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower
