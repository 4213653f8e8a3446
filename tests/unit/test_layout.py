"""The packages keep to their roles: the folder a module is in says where it runs and what it may
import. Every import is read, including those inside functions."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> the project packages (or modules) it must not import
FORBIDDEN = {
    "core": ("bentoml", "training", "bentos", "rollout", "monitoring"),  # light, shared by all
    "bentos": ("training", "rollout", "monitoring"),  # what runs in the bento (the inference log aside)
    "monitoring": ("bentos", "rollout"),
    "training": ("bentos", "rollout", "monitoring"),
    # a client of the public API: no model code, no model library, no store of its own
    "dashboard": ("bentoml", "bentos", "training", "monitoring", "rollout", "xgboost", "sklearn", "feast", "mlflow"),
    # the stream consumer: the data contract, the feature definitions and the store, no model
    "streaming": ("bentoml", "bentos", "training", "monitoring", "rollout", "dashboard", "xgboost", "sklearn", "mlflow"),
    # the harness that runs the manifests under podman: it reads k8s/ and drives podman, nothing of the platform's code
    "pods": ("bentoml", "bentos", "training", "monitoring", "rollout", "dashboard", "streaming", "feast", "mlflow"),
}
# the service's scorers, offline: the served reference (training) and windows without scores
# (monitoring) are scored by the same code as the service
OFFLINE_SCORING = ("bentos.frames", "bentos.loading")
ALLOWED = {"bentos": ("monitoring.inference_log",), "monitoring": OFFLINE_SCORING, "training": OFFLINE_SCORING,
           "dashboard": ("rollout.promotion", "rollout.settings"),  # the canary's evidence, read from /metrics
           "streaming": ("training.contract",)}


def imports(package: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append((path.name, node.module))
    return found


@pytest.mark.parametrize("package", FORBIDDEN)
def test_a_package_imports_only_what_its_role_allows(package):
    wrong = [(where, name) for where, name in imports(package)
             if name.split(".")[0] in FORBIDDEN[package] and name not in ALLOWED.get(package, ())]
    assert not wrong, wrong


def test_the_bento_ships_only_what_runs_in_it():
    """bentofile.yaml includes the serving code and what it imports, not training or the tools."""
    import yaml

    included = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["include"]
    folders = {pattern.split("/")[0] for pattern in included}
    assert folders == {"bentos", "core", "monitoring", "feature_repo"}
    assert "monitoring/inference_log.py" in included and "monitoring/*.py" not in included


def test_the_bentos_lock_holds_no_test_or_load_tools_and_pins_what_the_tests_ran():
    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))

    runtime, everything = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert not {"pytest", "locust", "ruff", "kubernetes-validate", "playwright", "streamlit"} & set(runtime)
    assert {"bentoml", "feast", "mlflow", "xgboost"} <= set(runtime)
    assert {name: version for name, version in runtime.items() if everything.get(name) != version} == {}
