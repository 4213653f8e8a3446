"""The documentation: the site builds strictly (no warning, no broken link or anchor), its generated
reference names every setting, command line, route, metric, make target and alert rule the code
has, every alert rule points at its runbook, and the README is a front door whose links resolve
and whose figures come from committed results."""

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "scoring", "bentos", "training", "monitoring", "rollout", "streaming", "dashboard", "pods")
ALERTS = ROOT / "monitoring" / "prometheus" / "alerts.yml"
RESULTS = ROOT / "loadtests" / "results"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as `make docs-build` builds it."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-O", "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                           cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
                           timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def test_the_site_builds_strictly_with_every_section(site):
    for section in ("get-started/install", "guides/serve", "runbooks", "reference/settings", "design/architecture",
                    "design/decisions", "benchmarks/serving"):
        assert (site / section / "index.html").exists(), section
    assert (site / "reference" / "openapi.json").read_bytes() == (ROOT / "tests" / "unit" / "openapi.json").read_bytes()


# --- the reference holds everything the code has ------------------------------------------------------

def settings_classes() -> list[type]:
    """Every pydantic-settings class in the project's packages, found by reading the source."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "BaseSettings" for b in node.bases):
                    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                    found.append(getattr(importlib.import_module(module), node.name))
    return found


def environment_variables(cls) -> list[str]:
    """The variables a class reads: prefix and field name, nested fields through the delimiter, aliases."""
    prefix = cls.model_config.get("env_prefix", "")
    delimiter = cls.model_config.get("env_nested_delimiter") or "__"
    names = []
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields"):
            names += [f"{prefix}{name}{delimiter}{sub}".upper() for sub in field.annotation.model_fields]
        elif field.validation_alias is not None:
            names += [str(c) for c in getattr(field.validation_alias, "choices", [field.validation_alias])]
        else:
            names.append(f"{prefix}{name}".upper())
    return names


def test_every_settings_field_is_in_the_reference(site):
    html = page(site, "reference/settings")
    classes = settings_classes()
    assert len(classes) >= 7
    nested = {f.annotation for cls in classes for f in cls.model_fields.values()}
    missing = [(cls.__name__, name) for cls in classes if cls not in nested
               for name in environment_variables(cls) if f"<code>{name}</code>" not in html]
    assert not missing


def command_lines() -> list[tuple[str, object]]:
    """Every `python -m ...` CLI of the project (a package's __main__, or a module that runs its own
    Typer app) with each subcommand."""
    import typer

    modules = {}
    for package in PACKAGES:
        if (ROOT / package / "__main__.py").exists():
            main = (ROOT / package / "__main__.py").read_text()
            source = re.search(r"from ([\w.]+) import app", main)
            modules[package] = source.group(1) if source else f"{package}.__main__"
        for path in (ROOT / package).glob("*.py"):
            text = path.read_text()
            if path.stem != "__main__" and 'if __name__ == "__main__":' in text and "typer.Typer(" in text:
                modules[f"{package}.{path.stem}"] = f"{package}.{path.stem}"
    assert {"training", "rollout", "monitoring", "streaming", "core.api_keys"} <= set(modules)
    found, apps = [], set()
    for name, module in modules.items():
        app = importlib.import_module(module).app
        if id(app) in apps:  # rollout/cli.py runs the app `python -m rollout` runs
            continue
        apps.add(id(app))
        group = typer.main.get_command(app)
        found.append((f"python -m {name}", group))
        found += [(f"python -m {name} {sub}", command) for sub, command in getattr(group, "commands", {}).items()]
    return found


def test_every_command_line_and_option_is_in_the_reference(site):
    html = page(site, "reference/cli")
    missing = []
    for line, command in command_lines():
        if f">{line}<" not in html:
            missing.append(line)
        missing += [f"{line} {opt}" for param in command.params if not param.hidden
                    for opt in param.opts if opt.startswith("-") and opt not in html]
    assert not missing


def make_targets() -> list[str]:
    """The targets `make help` lists (its awk pattern: a target with a `## ` description)."""
    return re.findall(r"^([a-zA-Z_-]+):.*## ", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)


def test_every_make_target_is_in_the_reference(site):
    html = page(site, "reference/make-targets")
    targets = make_targets()
    assert {"up", "test", "docs", "docs-build"} <= set(targets)
    assert not [t for t in targets if f"<code>make {t}</code>" not in html]


def test_the_docs_targets_are_phony():
    phony = re.search(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE).group(1).split()
    assert {"docs", "docs-build"} <= set(phony)


def test_every_route_and_schema_is_in_the_reference(site):
    import json

    html = page(site, "reference/http-api")
    document = json.loads((ROOT / "tests" / "unit" / "openapi.json").read_text())
    routes = [f"{method.upper()} {path}" for path, ops in document["paths"].items() for method in ops]
    assert not [r for r in routes if r not in html]
    assert not [s for s in document["components"]["schemas"] if f'id="{s.lower()}"' not in html]


def test_every_metric_and_alert_rule_is_in_the_reference(site):
    from bentos.metrics import metrics
    from streaming.cli import metrics as stream_metrics

    html = page(site, "reference/metrics")
    names = [m._name for m in [*vars(metrics()).values(), *stream_metrics().values()]]
    assert not [n for n in names if n not in html]
    assert not [rule["alert"] for rule in alert_rules() if f'id="{rule["alert"].lower()}"' not in html]


def test_every_feature_service_and_data_contract_column_is_in_the_reference(site):
    from core.feature_sets import SERVICE_FEATURES
    from core.schema import CUSTOMER_COLUMNS, TRANSACTION_COLUMNS

    services = page(site, "reference/feature-services")
    missing = [(service, feature) for service, features in SERVICE_FEATURES.items()
               for feature in [service, *features] if f"<code>{feature}</code>" not in services and f">{feature}<" not in services]
    assert not missing
    contract = page(site, "reference/data-contract")
    assert not [c for c in [*TRANSACTION_COLUMNS, *CUSTOMER_COLUMNS] if f"<code>{c}</code>" not in contract]


# --- alert rules and their runbooks ------------------------------------------------------------------

def alert_rules() -> list[dict]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_every_alert_rule_points_at_its_runbook_and_the_page_exists(site):
    site_url = yaml.safe_load((ROOT / "mkdocs.yml").read_text().split("\ntheme:")[0])["site_url"]
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["annotations"].get("runbook_url") == f"{site_url}runbooks/{name}/", name
        source = ROOT / "docs" / "runbooks" / f"{name}.md"
        assert source.exists(), name
        text = source.read_text()
        assert text.startswith(f"# {name}\n") and f"Severity: {rule['labels']['severity']}." in text, name
        for section in ("## What it means", "## How to confirm", "## What to do"):
            assert section in text, (name, section)
        assert (site / "runbooks" / name / "index.html").exists(), name


def test_every_runbook_is_of_an_alert_rule():
    pages = {p.stem for p in (ROOT / "docs" / "runbooks").glob("*.md")} - {"index"}
    assert pages == {rule["alert"] for rule in alert_rules()}


# --- the README ----------------------------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[`*_]", lambda m: "_" if m.group() == "_" else "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


README = ROOT / "README.md"


def test_every_link_and_anchor_in_the_readme_resolves():
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.DOTALL)
    links = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    relative = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert relative
    broken = []
    for link in relative:
        target, _, anchor = link.partition("#")
        path = (ROOT / target) if target else README
        if not path.exists():
            broken.append(link)
        elif anchor and anchor not in anchors(path):
            broken.append(link)
    assert not broken


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) < 200
    assert "make up" in README.read_text() and "make test" in README.read_text()


def test_every_figure_in_the_readme_is_in_a_committed_result():
    """A figure is a number with a decimal point or a thousands separator (not a version, not an address)."""
    results = " ".join(p.read_text(errors="ignore") for p in RESULTS.rglob("*") if p.suffix in (".md", ".json", ".csv"))
    results = re.sub(r"(?<=\d),(?=\d{3})", "", results)
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.DOTALL)
    figures = re.findall(r"(?<![\w.])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)(?![\w.])", text)
    missing = [f for f in figures if f.replace(",", "") not in results]
    assert not missing
