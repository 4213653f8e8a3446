"""The packages keep to their roles: the folder a module is in says where it runs and what it may
import. Every import is read, including those inside functions."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("core", "scoring", "bentos", "training", "monitoring", "rollout", "streaming", "dashboard", "pods")
# package -> the project packages it may import; the import graph runs one way, so nothing imports the service
MAY_IMPORT = {
    "core": (),  # light, shared by all
    "scoring": ("core",),  # the model layer: loading versions, the tree walk, the scorers
    "bentos": ("core", "scoring"),  # the service: routes, batching, auth, limits, metrics, the inference log
    "training": ("core", "scoring"),  # scores its served reference through the model layer
    "monitoring": ("core", "scoring"),  # scores windows that carry no score the same way
    "rollout": ("core", "scoring", "training"),  # trains candidates and judges them
    "streaming": ("core",),  # the data contract, the feature definitions and the store
    "dashboard": ("core", "rollout"),  # a client of the public API; the canary's gates as rollout reads /metrics
    "pods": ("core",),  # drives podman over k8s/; the settings' defaults only
}
# package -> the libraries it must not import
LIBRARIES_BARRED = {
    "core": ("bentoml",),
    "scoring": ("bentoml", "fastapi", "starlette"),  # no server in the model layer
    "dashboard": ("bentoml", "xgboost", "sklearn", "feast", "mlflow"),  # no model code, no model library, no store
    "streaming": ("bentoml", "xgboost", "sklearn", "mlflow"),  # no model
    "pods": ("bentoml", "feast", "mlflow"),
}


def imports(package: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append((path.name, node.module))
    return found


@pytest.mark.parametrize("package", PROJECT)
def test_a_package_imports_only_what_its_role_allows(package):
    allowed = {package, *MAY_IMPORT[package]}
    barred = LIBRARIES_BARRED.get(package, ())
    wrong = [(where, name) for where, name in imports(package)
             if (name.split(".")[0] in PROJECT and name.split(".")[0] not in allowed) or name.split(".")[0] in barred]
    assert not wrong, wrong


def test_every_package_of_the_project_has_a_role():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "loadtests"}
    assert packages == set(PROJECT) == set(MAY_IMPORT)


def module_graph() -> dict[str, set[str]]:
    """Each of the project's modules -> the project's modules it imports (a package's name stands
    for its __init__)."""
    modules = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
               for package in PROJECT for path in (ROOT / package).rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        named = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                named |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                named |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[module] = {name for name in named if name in modules and name != module}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = module_graph()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for name in graph[module]:
            if name in path:
                cycles.append(path[path.index(name):] + [name])
            elif name not in done:
                visit(name, path + [name])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, cycles


def test_the_bento_ships_only_what_runs_in_it():
    """bentofile.yaml includes the serving code and what it imports, not training or the tools."""
    import yaml

    included = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["include"]
    folders = {pattern.split("/")[0] for pattern in included}
    assert folders == {"bentos", "scoring", "core", "feature_repo"}


def test_every_file_of_the_packages_in_the_bento_is_shipped_in_it():
    """A data file beside the code (the reason-code catalogue) is read at run time: a pattern
    naming only *.py would leave it out, and the serving pod would not start."""
    from fnmatch import fnmatch

    import yaml

    included = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["include"]
    files = [str(path.relative_to(ROOT)) for folder in ("bentos", "scoring", "core") for path in (ROOT / folder).iterdir()
             if path.is_file() and path.suffix != ".pyc"]
    assert "core/reason_codes.toml" in files
    assert [f for f in files if not any(fnmatch(f, pattern) for pattern in included)] == []


def test_the_bentos_lock_holds_no_test_or_load_tools_and_pins_what_the_tests_ran():
    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))

    runtime, everything = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert not {"pytest", "locust", "ruff", "kubernetes-validate", "playwright", "streamlit"} & set(runtime)
    assert {"bentoml", "feast", "mlflow", "xgboost"} <= set(runtime)
    assert {name: version for name, version in runtime.items() if everything.get(name) != version} == {}
