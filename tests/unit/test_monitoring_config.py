"""The alert rules and the dashboard: valid, unit-tested with promtool, and speaking only of
metrics the service and the stream consumer export."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bentos.metrics import metrics

PROMETHEUS = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"
DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring" / "grafana" / "fintech-serving.json"
SUFFIXES = {"Counter": ("_total",), "Histogram": ("_bucket", "_sum", "_count"), "Gauge": ("",)}


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run([binary, *args], cwd=PROMETHEUS, capture_output=True, text=True)


def exported_series() -> set[str]:
    """Every series name the service's and the stream consumer's own metric objects expose."""
    from streaming.cli import metrics as stream_metrics

    names = set()
    for metric in [*vars(metrics()).values(), *stream_metrics().values()]:
        kind = type(metric).__name__
        names |= {metric._name + suffix for suffix in SUFFIXES[kind]}
    return names


def named_metrics(expression: str) -> set[str]:
    return set(re.findall(r"\bfintech_[a-z_]+", expression))


def test_the_rules_are_valid():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_when_it_should_and_only_then():
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_alert_has_a_test():
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    assert alerts == {t["alertname"] for test in tests for t in test["alert_rule_test"]}


def test_rules_and_dashboard_query_only_metrics_the_service_exports():
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    expressions = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    expressions += [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = set().union(*map(named_metrics, expressions))
    assert used and used <= exported_series(), used - exported_series()


def test_the_dashboard_has_the_three_views():
    dashboard = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Service overview", "Per model version", "Drift and data"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
