"""Request-time features of one transaction, relative to its customer's stored profile.

The Feast on-demand feature view ``transaction_context`` (feature_repo/fraud.py) runs this
function in python mode, both for training sets (``get_historical_features``) and for online
reads, so the fraud model sees the same values in both. Inputs and outputs are dicts of
equal-length lists, one position per transaction.
"""

from __future__ import annotations

import math

from core.schema import CHANNELS, MERCHANT_CATEGORIES

LIST_SEPARATOR = "|"  # joins the *_seen sets in the feature table (training/features.py)

REQUEST_FIELDS = ["amount", "merchant_category", "channel", "country", "device_id", "transaction_time"]
PROFILE_INPUTS = [
    "avg_log_amount_365d", "std_log_amount_365d", "median_amount_90d", "max_amount_90d",
    "hour_mean_90d", "hour_std_90d", "home_country", "countries_seen", "devices_seen", "categories_seen",
]
OUTPUT_FEATURES = [
    "amount_log_z", "amount_to_median", "amount_to_max", "transaction_hour", "hour_distance",
    "is_night", "is_foreign", "is_new_country", "is_new_device", "is_new_category",
    "category_index", "channel_index",
]
_CATEGORY_INDEX = {name: i for i, name in enumerate(MERCHANT_CATEGORIES)}
_CHANNEL_INDEX = {name: i for i, name in enumerate(CHANNELS)}


def _number(value, default: float) -> float:
    return default if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def names_seen(value: str | None) -> set[str]:
    """The names in one of the profile's *_seen features (None or "": none)."""
    return set(value.split(LIST_SEPARATOR)) if value else set()


def transaction_features(inputs: dict[str, list]) -> dict[str, list]:
    out: dict[str, list] = {name: [] for name in OUTPUT_FEATURES}
    for i, amount in enumerate(inputs["amount"]):
        amount = float(amount)
        hour = (int(inputs["transaction_time"][i]) % 86_400) / 3600.0
        usual_hour = _number(inputs["hour_mean_90d"][i], 13.0)
        hour_gap = abs(hour - usual_hour)
        hour_gap = min(hour_gap, 24.0 - hour_gap)
        country = inputs["country"][i]
        seen_countries = names_seen(inputs["countries_seen"][i])
        out["amount_log_z"].append(
            (math.log1p(amount) - _number(inputs["avg_log_amount_365d"][i], 3.7))
            / max(_number(inputs["std_log_amount_365d"][i], 0.7), 0.1)
        )
        out["amount_to_median"].append(amount / max(_number(inputs["median_amount_90d"][i], 40.0), 1.0))
        out["amount_to_max"].append(amount / max(_number(inputs["max_amount_90d"][i], 200.0), 1.0))
        out["transaction_hour"].append(hour)
        out["hour_distance"].append(hour_gap / max(_number(inputs["hour_std_90d"][i], 3.0), 0.5))
        out["is_night"].append(int(hour < 6))
        out["is_foreign"].append(int(bool(inputs["home_country"][i]) and country != inputs["home_country"][i]))
        out["is_new_country"].append(int(country not in seen_countries))
        out["is_new_device"].append(int(inputs["device_id"][i] not in names_seen(inputs["devices_seen"][i])))
        out["is_new_category"].append(int(inputs["merchant_category"][i] not in names_seen(inputs["categories_seen"][i])))
        out["category_index"].append(_CATEGORY_INDEX.get(inputs["merchant_category"][i], -1))
        out["channel_index"].append(_CHANNEL_INDEX.get(inputs["channel"][i], -1))
    return out
