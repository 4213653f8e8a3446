"""The retraining cycle's bookkeeping with a fake registry: the lock, the counters, recovering
after a killed cycle, waiting for evidence, and the drift trigger."""

import json
import time
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from core.registry import CHALLENGER, CHAMPION, CYCLE_COUNTERS, CYCLE_TAG, LOCK_TAG, SHARE_TAG, cycle_state
from rollout import cli, retrain


class FakeRegistry:
    """The few registered-model calls the cycle makes, on one dict of tags and one of aliases."""

    def __init__(self, aliases=None):
        self.tags: dict[str, str] = {}
        self.aliases: dict[str, str] = dict(aliases or {CHAMPION: "1"})
        self.on_set = None  # called after each tag write: another writer, in the lock test

    def get_registered_model(self, family):
        return SimpleNamespace(tags=dict(self.tags), aliases=dict(self.aliases))

    def set_registered_model_tag(self, family, key, value):
        self.tags[key] = value
        if self.on_set:
            self.on_set(key)

    def delete_registered_model_tag(self, family, key):
        self.tags.pop(key, None)

    def delete_registered_model_alias(self, family, alias):
        self.aliases.pop(alias)


def test_a_free_lock_is_taken_and_released_by_its_owner_only():
    registry = FakeRegistry()
    assert retrain.acquire(registry, "churn", "a", timeout_s=60, settle_s=0) is None
    assert retrain.read_lock(registry, "churn")[0] == "a"
    retrain.release(registry, "churn", "b")
    assert retrain.read_lock(registry, "churn")[0] == "a"
    retrain.release(registry, "churn", "a")
    assert LOCK_TAG not in registry.tags


def test_a_live_lock_refuses_a_second_cycle_and_names_the_first():
    registry = FakeRegistry()
    retrain.acquire(registry, "churn", "first", timeout_s=60, settle_s=0)
    registry.tags[CYCLE_TAG] = json.dumps({"id": "first", "stage": "searching", "outcome": None})
    with pytest.raises(retrain.CycleLocked, match="first holds the lock \\(stage searching"):
        retrain.acquire(registry, "churn", "second", timeout_s=60, settle_s=0)
    assert retrain.read_lock(registry, "churn")[0] == "first"


def test_of_two_cycles_writing_the_lock_at_once_the_one_not_read_back_stands_down():
    registry = FakeRegistry()
    registry.on_set = lambda key: registry.tags.update({LOCK_TAG: f"other {time.time() + 60:.0f}"}) if key == LOCK_TAG else None
    with pytest.raises(retrain.CycleLocked, match="same moment \\(other\\)"):
        retrain.acquire(registry, "churn", "mine", timeout_s=60, settle_s=0)


def test_an_expired_lock_of_a_cycle_that_never_finished_is_taken_over_and_its_canary_ended():
    registry = FakeRegistry({CHAMPION: "1", CHALLENGER: "2"})
    registry.tags.update({LOCK_TAG: f"dead {time.time() - 1:.0f}", SHARE_TAG: "10",
                          CYCLE_TAG: json.dumps({"id": "dead", "stage": "evidence", "outcome": None, "candidate": "2",
                                                 "champion": "1", "canary_started": True, "trigger": "schedule"})})
    dead = retrain.acquire(registry, "churn", "next", timeout_s=60, settle_s=0)
    assert dead["id"] == "dead"
    retrain.recover(registry, "churn", dead)
    assert registry.aliases == {CHAMPION: "1"} and registry.tags[SHARE_TAG] == "0"
    record, counts = cycle_state(registry.tags)
    assert record["outcome"] == "failed" and "evidence" in record["reason"]
    assert counts["failed"] == 1 and counts["failed_in_a_row"] == 1


def test_a_finished_cycle_behind_an_expired_lock_needs_no_recovery():
    registry = FakeRegistry()
    registry.tags.update({LOCK_TAG: f"old {time.time() - 1:.0f}",
                          CYCLE_TAG: json.dumps({"id": "old", "stage": "gates", "outcome": "promoted"})})
    assert retrain.acquire(registry, "churn", "next", timeout_s=60, settle_s=0) is None


def test_failures_in_a_row_count_up_and_any_other_outcome_resets_them():
    registry = FakeRegistry()
    for outcome in ("started", "failed", "started", "failed"):
        retrain.count(registry, "churn", outcome)
    assert cycle_state(registry.tags)[1] == {"started": 2, "promoted": 0, "refused": 0, "dry_run": 0, "failed": 2,
                                             "failed_in_a_row": 2}
    retrain.count(registry, "churn", "refused")
    assert cycle_state(registry.tags)[1]["failed_in_a_row"] == 0
    assert registry.tags[CYCLE_COUNTERS["failed"]] == "2"


def metrics_text(predictions: int) -> str:
    return ("# TYPE fintech_predictions counter\n"
            f'fintech_predictions_total{{model="churn",version="2",role="challenger",outcome="ok"}} {predictions}\n')


def test_waiting_for_evidence_returns_once_the_challenger_has_enough_and_gives_up_after_the_timeout():
    answers = iter([10, 150, 250])
    polled = []
    got = retrain.wait_for_evidence("churn", "1", "2", 200, lambda: metrics_text(next(answers)), 60, 0, polled.append)
    assert got == 250 and polled == [10, 150, 250]
    with pytest.raises(TimeoutError, match="10 of the 200"):
        retrain.wait_for_evidence("churn", "1", "2", 200, lambda: metrics_text(10), 0.05, 0.01, lambda n: None)


def test_the_services_refusal_of_the_candidate_is_read_from_its_reload_answer():
    refused = {"churn": {"changed": False, "refused": {"7": "churn version 7 scores [nan, nan, nan] on rows of ..."}}}
    assert retrain.refused_by_service(refused, "churn", "7").startswith("churn version 7 scores [nan")
    assert retrain.refused_by_service(refused, "churn", "8") is None  # another version's refusal
    assert retrain.refused_by_service({"churn": {"changed": True}}, "churn", "7") is None
    assert retrain.refused_by_service("service not reloaded (ConnectError)", "churn", "7") is None  # no answer: wait


def test_segment_has_no_labels_to_retrain_against():
    with pytest.raises(cli.RolloutError, match="segment has no labels"):
        retrain.run_cycle(None, retrain.RetrainSettings(), None, "segment", None)


@pytest.mark.parametrize(("share", "starts"), [(0.5, True), (0.2, False)])
def test_a_drift_report_over_the_line_starts_a_cycle_and_one_under_it_does_not(share, starts, tmp_path, monkeypatch):
    folder = tmp_path / "reports" / "drift" / "churn-20261201T000000Z"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"drift_share": share}))
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    started = []
    monkeypatch.setattr(cli, "retrain", lambda family, **kw: started.append((family, kw["trigger"])))
    result = CliRunner().invoke(cli.app, ["retrain-if-drifted", "churn", "--above", "0.3"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0]) == {"family": "churn", "retrain": starts, "drift_share": share, "above": 0.3}
    assert started == ([("churn", "drift")] if starts else [])


def test_no_drift_report_starts_no_cycle(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setattr(cli, "retrain", lambda family, **kw: pytest.fail("a cycle started without a report"))
    result = CliRunner().invoke(cli.app, ["retrain-if-drifted", "fraud"])
    assert result.exit_code == 0 and '"retrain": false' in result.output


def test_a_stop_signal_wrapped_by_mlflow_is_still_a_stop():
    """SIGTERM's CycleStopped raised inside an MLflow call comes out as an MlflowException: the cycle
    still records and exits as stopped (exit 4), not as a registry error (exit 2)."""
    from mlflow.exceptions import MlflowException

    stop = retrain.CycleStopped("stopped by signal 15")
    try:
        try:
            raise stop
        except retrain.CycleStopped as e:
            raise MlflowException(str(e)) from e
    except MlflowException as wrapped:
        assert retrain.stopped_within(wrapped) is stop
    assert retrain.stopped_within(MlflowException("the registry is down")) is None
