"""Decision flips before a promotion (rollout/flips.py): both versions score the challenger's
logged rows again, and the report counts the rows the champion decides otherwise, the adverse
rows whose principal reasons differ, and gates on the flip rate when told to."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core.settings import Settings
from rollout import flips as flips_module
from rollout.promotion import decide, flip_gate
from rollout.steps import flips_text
from scoring.loading import LoadedVersion
from tests.unit.test_scoring import FEATURES, booster  # noqa: F401 (fixture)


def test_flips_count_changed_decisions_and_changed_principal_reasons_on_rows_adverse_under_both():
    champion = (["low", "high", "high", "critical", "medium"], [(), ("A", "B"), ("A", "B"), ("C",), ()])
    challenger = (["low", "medium", "high", "critical", "high"], [(), (), ("B", "A"), ("C",), ("A",)])
    counted = flips_module.compare("churn", champion, challenger)
    assert counted["compared"] == 5 and counted["decision_flips"] == 2 and counted["flip_rate"] == 0.4
    assert counted["changes"] == {"high -> medium": 1, "medium -> high": 1}
    # rows 2 and 3 are adverse under both; row 2's reasons are the same codes in another order
    assert counted["adverse_under_both"] == 2 and counted["principal_reasons_changed"] == 1
    assert counted["principal_change_rate"] == 0.5


def test_the_flip_gate_is_off_by_default_and_refuses_above_its_limit_when_set():
    flips = {"compared": 400, "decision_flips": 12, "flip_rate": 0.03, "principal_change_rate": 0.1}
    off = flip_gate(flips, None)
    assert off.passed is None and off.figures["flip_rate"] == 0.03  # reported, not judged
    assert flip_gate(flips, 0.05).passed is True
    refused = flip_gate(flips, 0.02)
    assert refused.passed is False and decide([refused]) == (False, ["decision_flips"])
    assert flip_gate({"compared": 0, "skipped": "no rows yet"}, 0.05).passed is False  # no evidence is no pass


def test_decision_flips_rescore_the_challengers_logged_rows_with_both_versions(tmp_path, monkeypatch, booster):  # noqa: F811
    """Two versions of one booster, the challenger's probabilities calibrated upwards: the rows it
    scored high that the champion scores lower are counted, from a real inference-log folder."""
    metadata = {"features": FEATURES, "feature_service": "churn_v1", "risk_cutoffs": {"medium": 0.2, "high": 0.5, "critical": 0.8},
                "typical": {f: [10.0, 10.0] for f in FEATURES}}
    versions = {"1": LoadedVersion("churn", "1", booster, {**metadata, "calibration": {"a": 1.0, "b": 0.0}}),
                "2": LoadedVersion("churn", "2", booster, {**metadata, "calibration": {"a": 1.0, "b": 2.0}})}
    monkeypatch.setattr("scoring.loading.from_registry", lambda family, version, *args: versions[version])
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(rng.uniform(0, [90, 30, 1000], size=(300, 3)), columns=FEATURES).assign(
        time=datetime(2026, 12, 1, tzinfo=UTC), version="2", role="challenger", customer_id=[f"C{i}" for i in range(300)])
    folder = tmp_path / "inference_log" / "churn" / "date=2026-12-01"
    folder.mkdir(parents=True)
    rows.to_parquet(folder / "part-0.parquet", index=False)
    rows.assign(version="1", role="champion").to_parquet(folder / "part-1.parquet", index=False)  # not the challenger's

    counted = flips_module.decision_flips(Settings(data_dir=tmp_path), "churn", "1", "2")
    assert counted["compared"] == 300  # the challenger's rows only
    assert 0 < counted["decision_flips"] < 300
    assert all(change.split(" -> ")[0] in ("low", "medium", "high") for change in counted["changes"])  # only upwards
    assert "on 300 rows the challenger scored" in flips_text(counted)
    none_yet = flips_module.decision_flips(Settings(data_dir=tmp_path), "churn", "1", "3")
    assert none_yet["compared"] == 0 and "no row of version 3" in none_yet["skipped"]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
