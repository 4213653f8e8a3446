from core.realtime import OUTPUT_FEATURES, transaction_features

PROFILE = {
    "avg_log_amount_365d": [3.7], "std_log_amount_365d": [0.5], "median_amount_90d": [40.0],
    "max_amount_90d": [200.0], "hour_mean_90d": [13.0], "hour_std_90d": [2.0], "home_country": ["GB"],
    "countries_seen": ["FR|GB"], "devices_seen": ["d1"], "categories_seen": ["dining|groceries"],
}


def request(**overrides):
    row = {"amount": 40.0, "merchant_category": "groceries", "channel": "pos", "country": "GB",
           "device_id": "d1", "transaction_time": 1_767_272_400}  # 2026-01-01 13:00 UTC
    row.update(overrides)
    return {**PROFILE, **{k: [v] for k, v in row.items()}}


def one(**overrides):
    out = transaction_features(request(**overrides))
    assert set(out) == set(OUTPUT_FEATURES)
    return {k: v[0] for k, v in out.items()}


def test_an_ordinary_transaction_looks_ordinary():
    f = one()
    assert f["transaction_hour"] == 13.0 and f["hour_distance"] == 0.0 and f["is_night"] == 0
    assert f["amount_to_median"] == 1.0
    assert (f["is_foreign"], f["is_new_country"], f["is_new_device"], f["is_new_category"]) == (0, 0, 0, 0)


def test_unusual_details_are_flagged():
    f = one(amount=800.0, country="NG", device_id="d9", merchant_category="electronics", transaction_time=1_767_232_800)
    assert f["amount_to_median"] == 20.0 and f["amount_log_z"] > 5
    assert f["transaction_hour"] == 2.0 and f["is_night"] == 1 and f["hour_distance"] == 5.5  # 11 h away, std 2
    assert (f["is_foreign"], f["is_new_country"], f["is_new_device"], f["is_new_category"]) == (1, 1, 1, 1)


def test_a_customer_without_a_profile_gets_defaults_not_errors():
    empty = {k: [None] for k in PROFILE}
    row = {k: v for k, v in request().items() if k not in PROFILE}
    f = transaction_features({**empty, **row})
    assert f["is_new_country"] == [1] and f["amount_to_median"] == [1.0]
