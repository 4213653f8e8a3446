"""The registry with authentication, as k8s/base/mlflow.yaml runs it: a real `mlflow server
--app-name basic-auth`, its accounts made by k8s/images/mlflow/accounts.py from password files.

The writer trains and registers; the reader (serving, the dashboard) reads the champion and
downloads it, and can neither register a version nor move an alias, nor take the platform's model
names. Each role runs in a process of its own, with MLFLOW_TRACKING_USERNAME and the password as a
file (MLFLOW_TRACKING_PASSWORD_FILE), as the pods do; MLflow's client state stays out of this one."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.families import FAMILIES
from rollout.retrain import EXPERIMENT as RETRAIN_EXPERIMENT
from rollout.steps import PROMOTIONS_EXPERIMENT
from tests.integration.conftest import MlflowServer
from training.registry import EXPERIMENT

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS_SCRIPT = ROOT / "k8s" / "images" / "mlflow" / "accounts.py"
EXPERIMENTS = ",".join((EXPERIMENT, RETRAIN_EXPERIMENT, PROMOTIONS_EXPERIMENT))


def make_accounts(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ACCOUNTS_SCRIPT), "--secrets", str(folder / "secrets"),
                           "--database-uri", f"sqlite:///{folder / 'accounts.db'}",
                           "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--config", str(folder / "auth.ini"),
                           "--experiments", EXPERIMENTS, "--models", ",".join(FAMILIES)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini")})  # as the pod sets it


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry-auth")
    (folder / "secrets").mkdir()
    for name in ("admin", "writer", "reader"):
        (folder / "secrets" / name).write_text(secrets.token_urlsafe(18) + "\n")
    made = make_accounts(folder)
    assert made.returncode == 0, made.stderr[-3000:]
    assert os.stat(folder / "auth.ini").st_mode & 0o777 == 0o600
    server = MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", folder,
                          args=("--app-name", "basic-auth", "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts"),
                          env={"MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
                               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}).start()
    yield folder, server
    server.stop()


def as_account(folder: Path, url: str, account: str, call: str) -> dict:
    """Run `call` (a function of this module, given the registry's URL and the folder) as `account`
    in a process of its own; its JSON answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env |= {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": account,
            "MLFLOW_TRACKING_PASSWORD_FILE": str(folder / "secrets" / account), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    code = f"from tests.integration.test_registry_auth import {call}; {call}({url!r}, {str(folder)!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def register_segment(url: str, folder: str) -> None:
    """The writer: train a small segment model and register it, as `make train` does."""
    import numpy as np
    import pandas as pd

    from core.feature_sets import SEGMENT_FEATURES
    from core.settings import get_settings
    from training.models import train_segment
    from training.registry import log_and_register

    get_settings()  # reads MLFLOW_TRACKING_PASSWORD_FILE, as every command does
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.gamma(2.0, 50.0, size=(300, len(SEGMENT_FEATURES))), columns=SEGMENT_FEATURES)
    registered = log_and_register(train_segment(frame, range(3, 4), seed=1), frame, "segment_v1", url)
    print(json.dumps({"version": registered.version, "aliases": registered.aliases}))


def read_and_try_writes(url: str, folder: str) -> None:
    """The reader: the champion read and loaded as a serving pod does; then each write, and what
    the registry answered."""
    from core.registry import mlflow_client, read_plan
    from core.settings import get_settings
    from scoring.loading import from_registry

    get_settings()
    champion = read_plan("segment", url).champion
    loaded = from_registry("segment", champion, url, Path(folder) / "cache")
    client = mlflow_client(url)
    source = client.get_model_version("segment", champion).source
    writes = {"move the champion": lambda: client.set_registered_model_alias("segment", "champion", champion),
              "register a version": lambda: client.create_model_version("segment", source),
              "tag the model": lambda: client.set_registered_model_tag("segment", "serving.challenger_share", "100"),
              "take a platform name": lambda: client.delete_registered_model("churn")}
    answers = {}
    for what, write in writes.items():
        try:
            write()
            answers[what] = "done"
        except Exception as e:  # MLflow's RestException: the registry's error code
            answers[what] = getattr(e, "error_code", type(e).__name__)
    print(json.dumps({"champion": champion, "loaded": loaded.version, "writes": answers}))


def test_no_account_no_registry(registry):
    folder, server = registry
    assert httpx.get(f"{server.url}/health").status_code == 200  # the probes need no account
    search = f"{server.url}/api/2.0/mlflow/registered-models/search"
    assert httpx.get(search).status_code == 401
    assert httpx.get(search, auth=("reader", "not-the-password")).status_code == 401
    assert httpx.get(search, auth=("reader", (folder / "secrets" / "reader").read_text().strip())).status_code == 200


def test_the_platform_names_are_the_writers_before_any_training(registry):
    folder, server = registry
    reader = ("reader", (folder / "secrets" / "reader").read_text().strip())
    for family in FAMILIES:  # made by accounts.py: a reader cannot create them first and own them
        answer = httpx.post(f"{server.url}/api/2.0/mlflow/registered-models/create", json={"name": family}, auth=reader)
        assert answer.status_code in (400, 403), answer.text  # it exists (400) and is not the reader's
        answer = httpx.post(f"{server.url}/api/2.0/mlflow/model-versions/create", auth=reader,
                            json={"name": family, "source": "mlflow-artifacts:/0/planted"})
        assert answer.status_code == 403, answer.text


def test_the_writer_registers_and_the_reader_loads_but_cannot_write(registry):
    folder, server = registry
    registered = as_account(folder, server.url, "writer", "register_segment")
    assert "champion" in registered["aliases"]
    read = as_account(folder, server.url, "reader", "read_and_try_writes")
    assert read["champion"] == read["loaded"] == registered["version"]
    assert read["writes"] == {"move the champion": "PERMISSION_DENIED", "register a version": "PERMISSION_DENIED",
                              "tag the model": "PERMISSION_DENIED", "take a platform name": "PERMISSION_DENIED"}


def test_a_new_password_in_the_secret_replaces_the_old_at_the_next_start(registry):
    folder, server = registry
    search = f"{server.url}/api/2.0/mlflow/registered-models/search"
    old = (folder / "secrets" / "reader").read_text().strip()
    new = secrets.token_urlsafe(18)
    (folder / "secrets" / "reader").write_text(new)
    made = make_accounts(folder)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "reader: password set from the Secret" in made.stdout
    assert httpx.get(search, auth=("reader", old)).status_code == 401
    assert httpx.get(search, auth=("reader", new)).status_code == 200


def test_a_short_password_is_refused_by_name(tmp_path):
    (tmp_path / "secrets").mkdir()
    for name, password in (("admin", secrets.token_urlsafe(18)), ("writer", "short"), ("reader", secrets.token_urlsafe(18))):
        (tmp_path / "secrets" / name).write_text(password)
    made = make_accounts(tmp_path)
    assert made.returncode != 0
    assert "writer: MLflow refuses passwords shorter than 12 characters" in made.stderr
