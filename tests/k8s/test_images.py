"""The images of k8s/images/, checked without a Docker engine: what each installs is pinned as
requirements.lock pins it; the dashboard's holds every library and every package of the project
the dashboard imports, nothing of the bento's stack, and runs as its manifest runs it; the jobs'
holds every library and package the CronJobs' commands import and runs as the CronJobs run it."""

import ast
import importlib.metadata
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.k8s.test_manifests import DASHBOARD, invocations, jobs_image_pods, named, render

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "k8s" / "images"
DASHBOARD_DOCKERFILE = IMAGES / "dashboard" / "Dockerfile"
SERVING_DOCKERFILE = IMAGES / "serving" / "Dockerfile"
BASE_SCRIPT = IMAGES / "base" / "build.sh"
VENV_PATH = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the build stage's environment first
JOBS_DOCKERFILE = IMAGES / "jobs" / "Dockerfile"
RUNTIME_LOCK = "requirements-runtime.lock"  # the bento's runtime pins, resolved under requirements.lock
FEATURE_REPO = ROOT / "feature_repo"  # not a package: `feast apply` imports its files from its own folder
PROJECT_PACKAGES = {p.parent.name for p in ROOT.glob("*/__init__.py")}
BENTO_STACK = {"bentoml", "feast", "xgboost", "evidently", "mlflow"}  # mlflow: the server; the client is mlflow-skinny


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments left out."""
    text = re.sub(r"^\s*#.*\n", "", dockerfile.read_text(), flags=re.MULTILINE)
    text = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def arguments(dockerfile: Path, instruction: str) -> list[str]:
    return [args for name, args in instructions(dockerfile) if name == instruction]


def pip_installs(dockerfile: Path) -> list[list[str]]:
    """The words of each `uv pip install` the Dockerfile runs, from `install` on; the files it
    names by their name alone (the build stage copies them to /tmp)."""
    found = []
    for args in arguments(dockerfile, "RUN"):
        for command in args.split("&&"):
            words = shlex.split(command)
            at = next((i for i in range(len(words) - 2) if words[i:i + 3] == ["uv", "pip", "install"]), None)
            if at is not None:
                found.append([Path(w).name if w.startswith("/tmp/") else w for w in words[at + 2:]])
    return found


def pins(dockerfile: Path) -> dict[str, str]:
    return {canonicalize_name(name): version for words in pip_installs(dockerfile) for word in words
            if (m := re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[\w,]+\])?==(\S+)", word)) for name, version in [m.groups()]}


def locked(lock: str = "requirements.lock") -> dict[str, str]:
    text = (ROOT / lock).read_text()
    return {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.MULTILINE)}


def closure(names) -> set[str]:
    """The distributions `names` install, with every dependency (from the installed metadata)."""
    extras_of: dict[str, set[str]] = {}
    todo = [(canonicalize_name(n), frozenset()) for n in names]
    while todo:
        name, extras = todo.pop()
        if name in extras_of and extras <= extras_of[name]:
            continue
        extras_of.setdefault(name, set()).update(extras)
        for line in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            environments = [{"extra": e} for e in extras_of[name] or {""}]
            if requirement.marker is None or any(requirement.marker.evaluate(e) for e in environments):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return set(extras_of)


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None)


def imported(path: Path, module: str) -> set[str]:
    """Every module a file imports, at its top or inside a function, as absolute names; `from a
    import b` gives a.b too (b may be a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            source = ".".join(part for part in (base, node.module) if part)
            names |= {source} | {f"{source}.{alias.name}" for alias in node.names}
    return names


def imports_of(start: list[str], local: dict[str, Path] | None = None) -> tuple[set[str], set[str]]:
    """The project's modules that loading `start` loads (each file and what it imports, followed),
    and the top-level names of the other modules they import, not the standard library's. `local`:
    modules found by file rather than by package (a Feast repository's, on its own sys.path)."""
    local = local or {}
    todo, project, external = list(start), set(), set()
    while todo:
        name = todo.pop()
        top = name.split(".")[0]
        if top in PROJECT_PACKAGES or name in local:
            path = local.get(name) or module_file(name)
            if path is None or name in project:
                continue  # `from core.x import CONSTANT`: not a module
            project.add(name)
            parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
            todo += parents + sorted(imported(path, name))
        elif top not in sys.stdlib_module_names and top not in local:
            external.add(top)
    return project, external


def dashboard_imports() -> tuple[set[str], set[str]]:
    """The project's modules the dashboard loads and the other libraries they import."""
    files = [p.relative_to(ROOT).with_suffix("").parts for p in (ROOT / "dashboard").rglob("*.py")]
    return imports_of([".".join(parts[:-1] if parts[-1] == "__init__" else parts) for parts in files])


def test_every_image_pins_what_it_installs_as_the_lock_does():
    lock = locked()
    dockerfiles = sorted(set(IMAGES.glob("*/Dockerfile")) - {SERVING_DOCKERFILE})  # the bento's: its own lock, below
    assert DASHBOARD_DOCKERFILE in dockerfiles
    for dockerfile in dockerfiles:
        pinned = pins(dockerfile)
        assert pinned, dockerfile
        for name, version in pinned.items():
            assert lock.get(name, version) == version, (dockerfile.parent.name, name, version, lock[name])


def test_the_dashboard_image_installs_only_locked_distributions_under_the_lock():
    [install] = pip_installs(DASHBOARD_DOCKERFILE)
    assert install[install.index("-c") + 1] == "requirements.lock"  # every dependency at its locked version too
    assert "requirements.lock" in copied(DASHBOARD_DOCKERFILE)
    lock = locked()
    assert {n: lock.get(n) for n in pins(DASHBOARD_DOCKERFILE)} == pins(DASHBOARD_DOCKERFILE)
    assert all(n in lock for n in closure(pins(DASHBOARD_DOCKERFILE)))


def test_the_dashboard_image_holds_every_library_the_dashboard_imports():
    _, external = dashboard_imports()
    assert {"streamlit", "shap", "mlflow", "prometheus_client"} <= external  # the walk follows core/ and rollout/
    installed = closure(pins(DASHBOARD_DOCKERFILE))
    distributions = importlib.metadata.packages_distributions()
    missing = {top: distributions.get(top) for top in external
               if not {canonicalize_name(d) for d in distributions.get(top, [])} & installed}
    assert not missing, missing


def test_the_dashboard_image_leaves_out_the_bentos_stack():
    assert not closure(pins(DASHBOARD_DOCKERFILE)) & BENTO_STACK


def test_the_dashboard_image_copies_the_packages_the_dashboard_imports_and_no_other():
    project, _ = dashboard_imports()
    packages = {name.split(".")[0] for name in project}
    assert packages == {"core", "dashboard", "rollout"}
    assert copied(DASHBOARD_DOCKERFILE) == packages | {"requirements.lock"}
    # the build context is the repository root: its ignore file lets in only what is copied
    ignore = [line for line in (DASHBOARD_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*" and {line[1:] for line in ignore if line.startswith("!")} == copied(DASHBOARD_DOCKERFILE)


def test_the_dashboard_image_runs_as_its_manifest_runs_it():
    objects = render("dev")
    spec = named(objects, "Deployment", DASHBOARD)["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert arguments(DASHBOARD_DOCKERFILE, "USER") == [str(spec["securityContext"]["runAsUser"])]
    assert arguments(DASHBOARD_DOCKERFILE, "EXPOSE") == [str(p["containerPort"]) for p in container["ports"]]
    assert arguments(DASHBOARD_DOCKERFILE, "WORKDIR") == [container["workingDir"]]
    [cmd] = arguments(DASHBOARD_DOCKERFILE, "CMD")
    assert json.loads(cmd) == container["command"]  # `docker run` starts it as the cluster does
    [env] = arguments(DASHBOARD_DOCKERFILE, "ENV")
    assert dict(pair.split("=", 1) for pair in env.split()) == {"PATH": VENV_PATH, "PYTHONPATH": container["workingDir"], "HOME": "/tmp"}


# --- the jobs' image ------------------------------------------------------------------------------

def jobs_imports() -> tuple[set[str], set[str]]:
    """The project's packages the CronJobs' commands load (`python -m <module>`: its __main__ and
    what it imports, followed), and the other libraries they and the Feast definitions import."""
    modules = {module for _, spec in jobs_image_pods(render("dev")) for container in spec["containers"]
               for module, _ in invocations(container)}
    local = {path.stem: path for path in FEATURE_REPO.glob("*.py")}
    project, external = imports_of([f"{module}.__main__" for module in sorted(modules)] + sorted(local), local)
    return {name.split(".")[0] for name in project if name not in local}, external


def declared_extras() -> dict[str, Requirement]:
    """pyproject.toml's optional dependencies, by name."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {canonicalize_name(r.name): r for lines in extras.values() for r in map(Requirement, lines)}


def copied(dockerfile: Path) -> set[str]:
    """What the COPY instructions take from the build context (not from a build stage): every
    source, not the destination."""
    return {source.rstrip("/") for args in arguments(dockerfile, "COPY") if not args.startswith("--from")
            for source in args.split()[:-1]}


def test_the_jobs_image_installs_the_bentos_runtime_pins_the_offline_store_and_optuna_held_to_the_lock():
    [install] = pip_installs(JOBS_DOCKERFILE)
    assert install[install.index("-c") + 1] == "requirements.lock"  # every dependency at its locked version too
    assert install[install.index("-r") + 1] == RUNTIME_LOCK
    assert {"requirements.lock", RUNTIME_LOCK} <= copied(JOBS_DOCKERFILE)
    lock, runtime = locked(), locked(RUNTIME_LOCK)
    assert len(runtime) > 100 and {name: lock.get(name) for name in runtime} == runtime  # the bento's pins are the lock's
    extra = pins(JOBS_DOCKERFILE)
    assert "optuna" in extra and "optuna" not in runtime  # rollout/retrain.py's search; not in the bento
    # training sets: feature_store.yaml's offline store (Feast's DuckDB one, through ibis); not in the bento
    assert yaml.safe_load((FEATURE_REPO / "feature_store.yaml").read_text())["offline_store"]["type"] == "duckdb"
    assert "ibis-framework" in extra and not {"ibis-framework", "duckdb"} & set(runtime)
    declared = declared_extras()
    for name, version in extra.items():
        if name in lock:
            assert lock[name] == version, (name, version, lock[name])
        else:  # not locked yet (`make lock` adds the training extra): what pyproject.toml allows
            assert name in declared and declared[name].specifier.contains(version), (name, version)


def test_the_jobs_image_holds_every_library_the_jobs_import():
    _, external = jobs_imports()
    assert {"feast", "evidently", "xgboost", "mlflow", "optuna", "sklearn"} <= external  # lazy imports followed too
    installed = set(locked(RUNTIME_LOCK)) | set(pins(JOBS_DOCKERFILE))
    distributions = importlib.metadata.packages_distributions()
    missing = {top: distributions.get(top, [top]) for top in external
               if not {canonicalize_name(d) for d in distributions.get(top, [top])} & installed}
    assert not missing, missing


def test_the_jobs_image_copies_every_package_the_jobs_commands_import_and_no_other():
    from core import settings

    packages, _ = jobs_imports()
    assert packages == {"core", "monitoring", "rollout", "scoring", "streaming", "training"}  # no serving code: versions load by scoring.loading
    # the Feast definitions, where core/settings.py looks for them: beside core/
    assert settings.Settings.model_fields["feature_repo"].default == settings.REPO_ROOT / FEATURE_REPO.name
    assert copied(JOBS_DOCKERFILE) == packages | {FEATURE_REPO.name, "requirements.lock", RUNTIME_LOCK}
    # the root is read-only: the bytecode of python -O (the image's PYTHONOPTIMIZE), the libraries', then the project's
    compiled = [args.split() for args in arguments(JOBS_DOCKERFILE, "RUN") if "compileall" in args]
    assert [c[1:4] for c in compiled] == [["-O", "-m", "compileall"]] * 2
    assert compiled[0][-1] == "/opt/venv/lib/python3.11/site-packages"
    assert set(compiled[1][compiled[1].index("-q") + 1:]) == packages | {FEATURE_REPO.name}
    ignore = [line for line in (JOBS_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*" and {line[1:] for line in ignore if line.startswith("!")} == copied(JOBS_DOCKERFILE)


def test_the_jobs_image_runs_as_its_cronjobs_run_it():
    objects = render("dev")
    [workdir] = arguments(JOBS_DOCKERFILE, "WORKDIR")
    [user] = arguments(JOBS_DOCKERFILE, "USER")
    assert not arguments(JOBS_DOCKERFILE, "ENTRYPOINT")  # each CronJob's command is what runs
    [env] = arguments(JOBS_DOCKERFILE, "ENV")
    assert dict(pair.split("=", 1) for pair in env.split()) == {"PATH": VENV_PATH, "PYTHONPATH": workdir, "HOME": "/tmp",
                                                                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONOPTIMIZE": "1"}
    for name, spec in jobs_image_pods(objects):
        pod = spec["securityContext"]
        assert user == str(pod["runAsUser"]), name
        assert f"fintech:x:{pod['runAsUser']}:{pod['runAsGroup']}:" in BASE_SCRIPT.read_text()  # the base's user
        for container in spec["containers"]:
            assert container["workingDir"] == workdir and container["command"], container["name"]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")  # HOME, writable
            assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])


def test_every_image_of_k8s_has_a_make_target_that_builds_it():
    makefile = (ROOT / "Makefile").read_text()
    for dockerfile in sorted(IMAGES.glob("*/Dockerfile")):
        folder = dockerfile.parent.relative_to(ROOT)
        context = r"(\.|\$\(BENTO_CONTEXT\))"  # the repository, or the exported bento
        assert re.search(rf"^\t\$\(CONTAINER_ENGINE\) build \$\(BUILD_FLAGS\) -t \$\(\w*IMAGE\) "
                         rf"(-f {dockerfile.relative_to(ROOT)} (\$\(call ignore,\S+\) )?{context}|{folder})$",
                         makefile, re.MULTILINE), folder


def test_the_serving_image_is_the_bento_with_its_runtime_pins_and_bentofiles_settings():
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert bentofile["python"]["requirements_txt"] == f"./{RUNTIME_LOCK}"  # the bento's env/python/requirements.txt
    [install] = [words for args in arguments(SERVING_DOCKERFILE, "RUN") for words in map(shlex.split, args.split("&&"))
                 if "sync" in words]
    assert install[-1] == "/tmp/requirements.cpu.txt"  # requirements.txt, NCCL aside
    [env] = arguments(SERVING_DOCKERFILE, "ENV")
    settings = dict(pair.split("=", 1) for pair in env.split())
    assert {e["name"]: e["value"] for e in bentofile["envs"]}.items() <= settings.items()
    assert settings["PATH"] == VENV_PATH and arguments(SERVING_DOCKERFILE, "USER") == ["10001"]
