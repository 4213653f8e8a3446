"""The generator's drift scenario, end to end: two months more of the same customers, once as
they would have been and once with the scenario's shift (amounts 40% higher, half of the
point-of-sale payments moved to mobile). Each version's features go into a copy of the online
store, are scored through a real `bentoml serve`, land in its inference log, and the drift report
compares the two windows: it must flag every feature the scenario moves by a quarter of a standard
deviation or more, next to nothing it leaves alone, and fire the alert."""

import shutil

import httpx
import pandas as pd
import pytest

from core.feature_sets import CHURN_FEATURES
from loadtests.servers import stop
from monitoring.drift import ALERT_SHARE, read_log, run_report
from tests.integration.conftest import start_server
from training import store
from training.features import compute_features
from training.generate import DRIFT_FEATURES_MOVED, Period, add_months, generate_chunk

pytestmark = [pytest.mark.integration, pytest.mark.slow]
VIEWS = ("customer_activity", "customer_spend_mix", "customer_risk_profile")


def later_features(settings, drifted: bool) -> pd.DataFrame:
    """Features at the end of two further months, computed from the history and those months."""
    base = Period(settings.start_date, add_months(settings.start_date, settings.months))
    later = Period(base.end, add_months(base.end, 2))
    _, tx = generate_chunk(settings.seed, 0, settings.n_customers, base, later, drifted)
    history = pd.read_parquet(settings.data_dir / "clean" / "transactions.parquet")
    return compute_features(pd.concat([history, tx], ignore_index=True), [pd.Timestamp(later.end, tz="UTC")])


def write_online(feature_store, features: pd.DataFrame) -> None:
    for view in VIEWS:
        names = [f.name for f in feature_store.get_feature_view(view).features]
        feature_store.write_to_online_store(view, features[["customer_id", "event_timestamp", *names]])


def score_all(url: str, customers: list[str]) -> set[str]:
    """churn-batch in calls of 1,000; returns the request ids (one per call)."""
    ids = set()
    for start in range(0, len(customers), 1000):
        response = httpx.post(f"{url}/api/v1/inference/churn-batch", json={"customer_ids": customers[start:start + 1000]},
                              timeout=120)
        assert response.status_code == 200, response.text
        ids.add(response.headers["X-Request-ID"])
    return ids


def test_the_drift_report_finds_what_the_scenario_moved(settings, built, served_models, tmp_path_factory):
    copy = settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("drift") / "data"})
    shutil.copytree(settings.data_dir, copy.data_dir, ignore=shutil.ignore_patterns("inference_log", "logs"))
    feature_store = store.open_store(copy)
    as_it_was, drifted = later_features(settings, drifted=False), later_features(settings, drifted=True)
    customers = sorted(set(as_it_was["customer_id"]) & set(drifted["customer_id"]))

    process, url = start_server(copy, tmp_path_factory.mktemp("serve"), ONLINE_STORE="sqlite",
                                SERVING_REGISTRY_POLL_S="0", SERVING_INFERENCE_LOG_FLUSH_S="3600")
    try:
        write_online(feature_store, as_it_was)
        reference_ids = score_all(url, customers)
        write_online(feature_store, drifted)
        current_ids = score_all(url, customers)
    finally:
        stop(process)  # writes the inference log

    logged = read_log(copy.data_dir / "inference_log" / "churn")
    reference = logged[logged["request_id"].isin(reference_ids)]
    current = logged[logged["request_id"].isin(current_ids)]
    assert len(reference) == len(current) == len(customers)

    summary = run_report(reference, current, CHURN_FEATURES).summary
    flagged = set(summary["drifted_features"])
    expected = set(DRIFT_FEATURES_MOVED) & set(CHURN_FEATURES)
    # The decisions are built to find a shift of a quarter of a standard deviation (README,
    # Monitoring); some of what the scenario moves moves less (a year-long log average: ~0.12 sd).
    shift = {f: abs(current[f].mean() - reference[f].mean()) / reference[f].std() for f in expected}
    large = {f for f in expected if shift[f] >= 0.25}
    precision = len(flagged & expected) / len(flagged) if flagged else 0.0
    print(f"drift scenario: flagged {sorted(flagged)}; moved by 0.25 sd or more {sorted(large)}; "
          f"missed {({f: round(shift[f], 3) for f in expected - flagged})}; precision {precision:.2f}")
    assert large and large <= flagged, (sorted(flagged), sorted(large))
    assert precision >= 0.9, (sorted(flagged), sorted(expected))
    assert summary["drift_share"] > ALERT_SHARE  # the alert fires
