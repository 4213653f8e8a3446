"""The reference pages, generated from the code each time the site is built, so they cannot drift.

MkDocs runs this hook (mkdocs.yml: hooks) before it reads the navigation: each page below is added
to the site's files as if it were written under docs/, and none is committed.

    make docs-build          # python -O -m mkdocs build --strict
    python docs/hooks/reference.py reference/settings.md     # print one page

Nothing here needs a running server, the network or a trained model: the settings, the CLIs, the
metrics and the contract are read from the modules that define them, the HTTP API from the OpenAPI
document the service publishes (tests/unit/openapi.json, which a unit test holds equal to the
app's), the alert rules from monitoring/prometheus/alerts.yml, the FeatureServices from
feature_repo/ (Feast's own objects; Feast imports faster under python -O), the make targets from
the Makefile's `## ` descriptions, and the package roles from tests/unit/test_layout.py.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "scoring", "bentos", "training", "monitoring", "rollout", "streaming", "dashboard", "pods")
OPENAPI = ROOT / "tests" / "unit" / "openapi.json"
ALERTS = ROOT / "monitoring" / "prometheus" / "alerts.yml"
GENERATED_NOTE = "*Generated from the code when the site is built ({source}); edit the source, not this page.*\n\n"


def cell(text) -> str:
    """Prose for a Markdown table cell: one line, pipes escaped, angle brackets shown as written."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def prose(text) -> str:
    """A paragraph of the code's own words: angle brackets shown as written."""
    return str(text).replace("<", "&lt;").replace(">", "&gt;")


def code(text) -> str:
    """A code span on one line; a pipe in it would end a table cell, so it reads "or"."""
    return f"`{' '.join(str(text).split()).replace(' | ', ' or ').replace('|', '/')}`" if text not in ("", None) else ""


# --- settings ------------------------------------------------------------------------------------------

def settings_classes() -> list[type]:
    """Every pydantic-settings class of the project's packages, in package order; a class used only
    as another's field (FamilySettings) is documented under that field."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "BaseSettings" for b in node.bases):
                    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                    found.append(getattr(importlib.import_module(module), node.name))
    nested = {f.annotation for cls in found for f in cls.model_fields.values()}
    return [cls for cls in found if cls not in nested]


def type_name(annotation) -> str:
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(\w+)", r"\1", text)


def default_text(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        return code(json.dumps(value)) if value in ({}, []) else "(computed at start)"
    value = field.default
    if value is PydanticUndefined:
        return "(required)"
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, Path):
        return code(f"./{value.relative_to(ROOT)}" if value.is_relative_to(ROOT) else value)
    if isinstance(value, date):
        return code(value.isoformat())
    if value == "":
        return '`""`'
    return code(value)


def env_names(cls, name: str, field, prefix: str) -> list[str]:
    alias = field.validation_alias
    if alias is not None:
        return [str(choice) for choice in getattr(alias, "choices", [alias])]
    return [f"{prefix}{name}".upper()]


def settings_rows(cls) -> list[tuple[list[str], object, str]]:
    """(environment variables, field, description) for every field, nested ones expanded."""
    config = cls.model_config
    prefix, delimiter = config.get("env_prefix", ""), config.get("env_nested_delimiter") or "__"
    rows = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            for sub, subfield in annotation.model_fields.items():
                rows.append(([f"{prefix}{name}{delimiter}{sub}".upper()], subfield, subfield.description or ""))
        else:
            rows.append((env_names(cls, name, field, prefix), field, field.description or ""))
    return rows


def settings_page() -> str:
    lines = ["# Settings\n", GENERATED_NOTE.format(source="the pydantic-settings classes"),
             "Every setting is an environment variable, read when the process starts. Each table is one "
             "settings class; its module says which processes read it. Variables that are not settings "
             "fields (the local tools' credential, Ray's, numba's) are under "
             "[Other environment variables](environment.md).\n"]
    for cls in settings_classes():
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0]
        lines += [f"## {cls.__name__}\n", f"`{cls.__module__}.{cls.__name__}`: {prose(' '.join(doc.split()))}\n",
                  "| environment variable | type | default | description |", "|---|---|---|---|"]
        for names, field, description in settings_rows(cls):
            env = "<br>".join(code(n) for n in names)
            lines.append(f"| {env} | {code(type_name(field.annotation))} | {default_text(field)} "
                         f"| {cell(description) or '—'} |")
        lines.append("")
    return "\n".join(lines)


# --- command lines -------------------------------------------------------------------------------------

CLIS = {  # what `python -m NAME` runs -> the module holding its Typer app
    "training": "training.cli",
    "rollout": "rollout.cli",
    "monitoring": "monitoring.cli",
    "streaming": "streaming.cli",
    "core.api_keys": "core.api_keys",
    "pods": "pods.__main__",
}


def cli_commands() -> list[tuple[str, object]]:
    """(the command line, its click command) for every CLI and subcommand."""
    import typer

    found = []
    for name, module in CLIS.items():
        group = typer.main.get_command(importlib.import_module(module).app)
        found.append((f"python -m {name}", group))
        for sub, command in getattr(group, "commands", {}).items():
            found.append((f"python -m {name} {sub}", command))
    return found


def command_section(line: str, command) -> list[str]:
    context = command.context_class(command, info_name=line)
    text = prose((command.help or "").strip())
    out = [f"## {line}\n" if line.count(" ") == 2 else f"### {line}\n", text + "\n" if text else "",
           "```", command.get_usage(context).strip(), "```\n"]
    params = [p for p in command.params if not p.hidden]
    if params:
        out += ["| argument or option | help |", "|---|---|"]
        for param in params:
            record = param.get_help_record(context)
            label, helptext = record if record else (param.name if param.param_type_name == "argument" else ", ".join(param.opts),
                                                     getattr(param, "help", "") or "")
            out.append(f"| {code(label)} | {cell(helptext) or '—'} |")
        out.append("")
    subcommands = getattr(command, "commands", {})
    if subcommands:
        out += ["| command | what it does |", "|---|---|"]
        out += [f"| [`{sub}`](#{slug(f'{line} {sub}')}) | {cell(c.get_short_help_str(200))} |" for sub, c in subcommands.items()]
        out.append("")
    return out


def slug(heading: str) -> str:
    """The anchor MkDocs gives a heading (its toc extension's default)."""
    text = re.sub(r"[^\w\s-]", "", heading.lower()).strip()
    return re.sub(r"[-\s]+", "-", text)


def cli_page() -> str:
    lines = ["# Command lines\n", GENERATED_NOTE.format(source="each CLI's own --help"),
             "Each pipeline step and tool is a small CLI; `make` targets call them (see [Make targets](make-targets.md)). "
             "Options take their defaults from the [settings](settings.md) unless they say otherwise.\n"]
    for line, command in cli_commands():
        lines += command_section(line, command)
    return "\n".join(lines)


# --- HTTP API ------------------------------------------------------------------------------------------

def schema_type(schema: dict) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(schema_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {schema_type(schema.get('items', {}))}"
    if "enum" in schema:
        return "one of " + ", ".join(code(v) for v in schema["enum"])
    if schema.get("type") == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"map of text to {schema_type(schema['additionalProperties'])}"
    kind = schema.get("type", "any")
    return f"{kind} ({schema['format']})" if "format" in schema else kind


def constraints(schema: dict) -> list[str]:
    found = []
    for option in schema.get("anyOf", [schema]):
        for key, label in (("minLength", "at least {} characters"), ("maxLength", "at most {} characters"),
                           ("minimum", "≥ {}"), ("maximum", "≤ {}"), ("exclusiveMinimum", "> {}"),
                           ("minItems", "at least {} items"), ("maxItems", "at most {} items"), ("pattern", "matches `{}`")):
            if key in option:
                found.append(label.format(option[key]))
        if option.get("not", {}).get("enum"):
            found.append("not " + ", ".join(str(v) for v in option["not"]["enum"]))
    return found


def http_api_page() -> str:
    document = json.loads(OPENAPI.read_text())
    info = document["info"]
    lines = ["# HTTP API\n", GENERATED_NOTE.format(source="the OpenAPI document the service publishes at /openapi.json"),
             f"**{info['title']}** {info['version']}: {info['description']} The document itself: "
             "[openapi.json](openapi.json) (a running service also serves it at `/openapi.json`, and BentoML's at `/docs.json`).\n",
             "## Credentials\n", "| scheme | how | description |", "|---|---|---|"]
    for name, scheme in document["components"]["securitySchemes"].items():
        how = f"header `{scheme['name']}`" if scheme["type"] == "apiKey" else f"`Authorization: Bearer` ({scheme.get('bearerFormat', '')})"
        lines.append(f"| `{name}` | {how} | {cell(scheme.get('description', ''))} |")
    lines += ["", "A route that lists no credential is open (the probes, `/metrics` and the documents). See "
              "[Serve: authentication](../guides/auth.md) for scopes and refusals.\n", "## Routes\n"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            lines += [f"### {method.upper()} {path}\n", f"**{operation.get('summary', '')}**. "
                      + prose(operation.get("description", "") or "") + ("" if operation.get("security") else " No credential needed.") + "\n"]
            parameters = operation.get("parameters", [])
            if parameters:
                lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
                for p in parameters:
                    extra = "; ".join(constraints(p.get("schema", {})))
                    lines.append(f"| `{p['name']}` | {p['in']} | {cell(schema_type(p.get('schema', {})))} | "
                                 f"{'yes' if p.get('required') else 'no'} | {cell(p.get('description', ''))}"
                                 f"{cell('; ' + extra) if extra else ''} |")
                lines.append("")
            body = operation.get("requestBody")
            if body:
                schema = body["content"]["application/json"]["schema"]
                lines.append(f"Body (JSON): {schema_type(schema)}.\n")
            lines += ["| status | meaning | body |", "|---|---|---|"]
            for status, response in operation.get("responses", {}).items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                lines.append(f"| {status} | {cell(response.get('description', ''))} | {schema_type(schema) if schema else ''} |")
            lines.append("")
    lines.append("## Schemas\n")
    for name, schema in document["components"]["schemas"].items():
        lines.append(f"### {name}\n")
        if schema.get("description"):
            lines.append(cell(schema["description"]) + "\n")
        required = set(schema.get("required", []))
        closed = schema.get("additionalProperties") is False
        lines += ["| field | type | required | description |", "|---|---|---|---|"]
        for field, spec in schema.get("properties", {}).items():
            notes = [spec.get("description", "")] + constraints(spec)
            lines.append(f"| `{field}` | {cell(schema_type(spec))} | {'yes' if field in required else 'no'} | "
                         f"{cell('; '.join(n for n in notes if n))} |")
        lines.append("\nUnknown fields are refused (422).\n" if closed else "")
    return "\n".join(lines)


# --- metrics and alert rules ---------------------------------------------------------------------------

SUFFIX = {"Counter": "_total", "Histogram": "", "Gauge": ""}


def metric_objects() -> list[tuple[str, object]]:
    from bentos.metrics import metrics
    from streaming.cli import metrics as stream_metrics

    return [("the service (`/metrics` on its port)", m) for m in vars(metrics()).values()] + \
           [("the stream consumer (`/metrics` on :9108)", m) for m in stream_metrics().values()]


def alert_rules() -> list[tuple[str, dict]]:
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())
    return [(group["name"], rule) for group in rules["groups"] for rule in group["rules"]]


def metrics_page() -> str:
    lines = ["# Metrics and alert rules\n",
             GENERATED_NOTE.format(source="the metric objects of bentos/metrics.py and streaming/cli.py, and "
                                          "monitoring/prometheus/alerts.yml"),
             "## Metrics\n", "Histograms are exported as `_bucket`, `_sum` and `_count` series. The service sums its "
             "worker processes' values (prometheus_client's multiprocess mode).\n",
             "| metric | type | labels | exported by | what |", "|---|---|---|---|---|"]
    for where, metric in metric_objects():
        kind = type(metric).__name__
        labels = ", ".join(metric._labelnames) or "—"
        lines.append(f"| `{metric._name}{SUFFIX[kind]}` | {kind.lower()} | {labels} | {where} | {cell(metric._documentation)} |")
    lines += ["", "## Alert rules\n", "`monitoring/prometheus/alerts.yml` (and the same groups in the cluster's "
              "PrometheusRule, `monitoring/prometheus/prometheusrule.yaml`). Each rule's `runbook_url` is its page "
              "under [Runbooks](../runbooks/index.md).\n"]
    for group, rule in alert_rules():
        name = rule["alert"]
        lines += [f"### {name}\n", f"| group | severity | for | runbook |", "|---|---|---|---|",
                  f"| `{group}` | {rule.get('labels', {}).get('severity', '')} | {rule.get('for', '0s (at once)')} | "
                  f"[{name}](../runbooks/{name}.md) |", "",
                  f"Summary: {cell(rule.get('annotations', {}).get('summary', ''))}\n",
                  "```promql", rule["expr"].strip(), "```\n"]
    return "\n".join(lines)


# --- the data contract ---------------------------------------------------------------------------------

def reject_reasons() -> list[str]:
    """The reasons the contract gives rows, found by checking one bad row of each kind."""
    import pandas as pd

    from core.contract import validate

    good = {"transaction_id": "T0", "customer_id": "C1", "timestamp": "2026-01-01T10:00:00Z", "amount": "12.5",
            "merchant_id": "M1", "merchant_category": "groceries", "channel": "pos", "country": "GB",
            "device_id": "D1", "is_fraud": "0"}
    bad = [{column: None} for column in good]
    bad += [{"timestamp": "not a time"}, {"amount": "lots"}, {"is_fraud": "maybe"}, {"amount": "inf"},
            {"amount": "-3"}, {"timestamp": "1980-01-01T00:00:00Z"}, {"merchant_category": "casino"},
            {"channel": "fax"}, {"is_fraud": "2"}, {"transaction_id": "T0"}, {"customer_id": "C2"}]
    rows = [good] * 30 + [good | change | ({"transaction_id": f"B{i}"} if "transaction_id" not in change else {})
                          for i, change in enumerate(bad)]
    result = validate(pd.DataFrame(rows), known_customers={"C1"})
    return list(result.reason_counts)


def contract_page() -> str:
    from core.contract import MIN_PARSEABLE_SHARE
    from core.schema import CUSTOMER_COLUMNS, TRANSACTION_COLUMNS

    lines = ["# Data contract\n", GENERATED_NOTE.format(source="core/schema.py and core/contract.py"),
             "What a transactions file (Parquet or CSV) must hold. The pipeline (`python -m training features`) and "
             "the stream consumer check the same contract; the stream's live events carry no label. "
             "How to bring a file: [Bring your own data](../guides/bring-your-own-data.md).\n",
             "## Transactions\n", "| column | kind | meaning |", "|---|---|---|"]
    lines += [f"| `{c}` | {kind} | {cell(text)} |" for c, (kind, text) in TRANSACTION_COLUMNS.items()]
    lines += ["", "## Customers (optional)\n", "With a customers file, transactions of customers it does not list are "
              "rejected.\n", "| column | kind | meaning |", "|---|---|---|"]
    lines += [f"| `{c}` | {kind} | {cell(text)} |" for c, (kind, text) in CUSTOMER_COLUMNS.items()]
    lines += ["", "## A file refused whole\n", "A file that lacks a column, or whose column is of the wrong type (a "
              f"number or timestamp column of which fewer than {MIN_PARSEABLE_SHARE:.0%} of the values parse, as in a "
              "CSV), stops the run with a message naming the column (exit code 2).\n", "## Rows rejected, and why\n",
              "A row that breaks the contract is written, as read, to `DATA_DIR/rejects/transactions_rejects.csv` "
              "with a `reject_reason` column (several reasons joined by `; `), and counted by reason in the run's "
              "summary. The reasons:\n"]
    lines += [f"- `{reason}`" for reason in reject_reasons()]
    return "\n".join(lines) + "\n"


# --- FeatureServices -----------------------------------------------------------------------------------

def feature_services() -> tuple[list, dict]:
    """Feast's own FeatureService objects and every view they read, from feature_repo/."""
    repo = str(ROOT / "feature_repo")
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from feast import FeatureService

    services = importlib.import_module("services")
    found = [obj for obj in vars(services).values() if isinstance(obj, FeatureService)]
    views = {}
    for module in ("customer", "fraud", "stream"):
        for obj in vars(importlib.import_module(module)).values():
            if type(obj).__name__ in ("FeatureView", "OnDemandFeatureView"):
                views[obj.name] = obj
    return found, views


def feature_services_page() -> str:
    services, views = feature_services()
    lines = ["# Features per FeatureService\n", GENERATED_NOTE.format(source="Feast's objects in feature_repo/"),
             "One FeatureService per model version: the exact features that version reads, view by view. How the "
             "views are computed: [Compute features](../guides/features.md).\n", "## Feature views\n",
             "| view | kind | features | description |", "|---|---|---|---|"]
    for name, view in views.items():
        kind = "on demand (computed at request time)" if type(view).__name__ == "OnDemandFeatureView" else "stored"
        lines.append(f"| `{name}` | {kind} | {len(view.features)} | {cell(view.description)} |")
    lines.append("")
    for service in services:
        rows = [(projection.name, feature) for projection in service.feature_view_projections for feature in projection.features]
        lines += [f"## {service.name}\n", f"{cell(service.description)} Model `{service.tags.get('model', '')}`, "
                  f"{len(rows)} features.\n", "| # | feature | type | view |", "|---:|---|---|---|"]
        lines += [f"| {i} | `{feature.name}` | {feature.dtype} | `{view}` |" for i, (view, feature) in enumerate(rows, 1)]
        lines.append("")
    return "\n".join(lines)


# --- make targets --------------------------------------------------------------------------------------

TARGET = re.compile(r"^([a-zA-Z_-]+):([^=]*?)## (.*)$")


def make_targets() -> list[tuple[str, list[str], str]]:
    found = []
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = TARGET.match(line)
        if match:
            name, prerequisites, description = match.groups()
            first = [p for p in prerequisites.split("|")[0].split() if re.fullmatch(r"[a-z][a-z-]*", p)]
            found.append((name, first, description.strip()))
    return found


def make_targets_page() -> str:
    lines = ["# Make targets\n", GENERATED_NOTE.format(source="the Makefile's `## ` descriptions; `make` prints the same list"),
             "Every target honours `DATA_DIR` (default `./data`) and the [settings](settings.md) the commands it runs read.\n",
             "| target | what it does | runs first |", "|---|---|---|"]
    for name, first, description in make_targets():
        lines.append(f"| `make {name}` | {cell(description)} | {', '.join(code(p) for p in first)} |")
    return "\n".join(lines) + "\n"


# --- the layout ----------------------------------------------------------------------------------------

ROLES = {  # what each package holds; the build fails when a package has no row here
    "core": "What every part shares, kept light (no BentoML, no training code): `settings`, `contract` (the data "
            "contract, for the pipeline and the stream consumer), `schema` (its vocabularies), `feature_sets` (the "
            "feature lists), `realtime` (request-time fraud features, also run by Feast's on-demand view), "
            "`stream_features`, `decisions` (calibration, risk levels), `families` (the one table of family facts: "
            "FeatureService, what a row is, how a version is stored, score and decision fields, label), `registry` "
            "(roles, canary tags, the MLflow client), `store`, `histograms`, `reports`, `api_keys`, `audit`, `movement`.",
    "scoring": "The model layer: `loading` (a version from the registry or the bento's store), `trees` (the compiled "
               "tree walk), `base` (one store read per batch, overrides, errors, reason codes, `build_scorer`), one "
               "module per family (`churn`, `fraud`, `segment`: its model loader and scorer), `frames` (scoring a "
               "table offline through the same scorers).",
    "bentos": "The service, and only that: `service` (the BentoML service), `routes` (the one route table: path, "
              "family, scope, models, handler), `api` (FastAPI's routes, errors, admission, body limits, admin), "
              "`fastpath` (the clean single-customer requests answered in front of BentoML's router and FastAPI), "
              "`family` (one family served in the process: versions, champion or challenger, batching, shadow), "
              "`batching`, `online` (bulk Feast reads), `canary`, `versions` (following the registry), "
              "`inference_log` (every prediction to Parquet), `auth`, `limits`, `redis_limits`, `shadow`, `schemas`, "
              "`metrics`, `config`.",
    "training": "The offline pipeline: `generate` (synthetic data), `features` (point-in-time features and labels), "
                "`partitions` (transactions split by customer; each partition in this process or as Ray tasks), "
                "`sampling`, `store` (feast apply, online writes, point-in-time retrieval), `models`, `registry` "
                "(logging and registering versions), `pipeline` and `cli`.",
    "monitoring": "`drift` (Evidently reports), `cli` (`python -m monitoring`), the Prometheus rules and Grafana dashboard.",
    "rollout": "Model versions in production: `steps` (the library: canary, evaluate, promote, rollback, choose "
               "features), `retrain` (a retraining cycle), `promotion` (evidence and gates), `evaluation` (quality on "
               "the latest labels), `import_models` (champions into the BentoML store), `cli` (`python -m rollout`, a "
               "thin layer over `steps` and `retrain`), `settings`.",
    "streaming": "The streaming path: `consumer` (stream → contract → windows → Feast push), `producer` (replay a "
                 "file at a rate), `cli` (`python -m streaming`).",
    "dashboard": "The Streamlit dashboard, a client of the public API.",
    "pods": "Runs the overlays' pods under podman (`python -m pods`).",
}
OTHER_FOLDERS = {
    "feature_repo": "Feast definitions: entity, sources and push source, feature views, the on-demand views, one "
                    "FeatureService per model version.",
    "tests": "`unit/`, `data/` (contract), `model/` (behaviour), `integration/` (real Feast, MLflow, Redis, the ASGI app "
             "and a real `bentoml serve`), `k8s/`, `pods/`.",
    "loadtests": "The locust scenario, benchmark harnesses, the baselines they compare against, committed results (`results/`).",
    "k8s": "Kustomize base (the service, Redis, MLflow on PostgreSQL, the shared data volume, the CronJobs), "
           "components and the overlays `dev` and `prod`.",
    "docs": "This site: its pages, and the hook that generates the reference.",
}


def layout_table() -> tuple[dict, dict]:
    """MAY_IMPORT and LIBRARIES_BARRED, as tests/unit/test_layout.py holds them."""
    tree = ast.parse((ROOT / "tests" / "unit" / "test_layout.py").read_text())
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("MAY_IMPORT", "LIBRARIES_BARRED"):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    return values["MAY_IMPORT"], values["LIBRARIES_BARRED"]


def layout_page() -> str:
    may_import, barred = layout_table()
    missing = set(may_import) - set(ROLES)
    if missing:
        raise ValueError(f"docs/hooks/reference.py: give the package(s) {sorted(missing)} a row in ROLES")
    lines = ["# Module layout\n", GENERATED_NOTE.format(source="tests/unit/test_layout.py's table and the folders"),
             "The top level names the system's parts, one folder each. The last two columns are "
             "`tests/unit/test_layout.py`'s table: a package importing another project package, or a library barred "
             "from it, fails that test, as does any import cycle between modules. Nothing imports the service.\n",
             "| folder | what it holds | may import | must not import |", "|---|---|---|---|"]
    for package, allowed in may_import.items():
        lines.append(f"| `{package}/` | {cell(ROLES[package])} | {', '.join(code(p) for p in allowed) or 'nothing of the project'} "
                     f"| {', '.join(code(p) for p in barred.get(package, ())) or '—'} |")
    lines += [f"| `{folder}/` | {cell(text)} | | |" for folder, text in OTHER_FOLDERS.items()]
    return "\n".join(lines) + "\n"


# --- the hook ------------------------------------------------------------------------------------------

PAGES = {
    "reference/settings.md": settings_page,
    "reference/cli.md": cli_page,
    "reference/http-api.md": http_api_page,
    "reference/metrics.md": metrics_page,
    "reference/data-contract.md": contract_page,
    "reference/feature-services.md": feature_services_page,
    "reference/make-targets.md": make_targets_page,
    "design/layout.md": layout_page,
}


def on_files(files, config):
    from mkdocs.structure.files import File

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for src_uri, build in PAGES.items():
        files.append(File.generated(config, src_uri, content=build()))
    files.append(File.generated(config, "reference/openapi.json", content=OPENAPI.read_bytes()))
    return files


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(PAGES[sys.argv[1]]())
