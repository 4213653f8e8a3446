"""What the integration tests share: the offline pipeline run once on a small data set, its
champion models imported into the (per-session) BentoML store, and a real redis-server."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest

from core.settings import get_settings
from loadtests.servers import ServerDidNotStart, free_port, start, stop
from training.pipeline import build_features, make_data, train_all

PUSHED_CUSTOMER_SEED = 99  # the push test writes to this customer: the others read untouched values


def latest_rows(table: pd.DataFrame, n: int, pushed: bool = False) -> pd.DataFrame:
    """n customers of the last snapshot, the one the push test changes only when asked for."""
    latest = table[table["event_timestamp"] == table["event_timestamp"].max()]
    target = latest.sample(1, random_state=PUSHED_CUSTOMER_SEED)
    if pushed:
        return target.set_index("customer_id")
    return latest.drop(target.index).sample(n, random_state=0).set_index("customer_id")


def apply_unmaterialized_churn_service(feature_store, name: str = "churn_next") -> str:
    """A FeatureService `name` over one new view of every churn feature, applied to the store's
    registry and never materialized: what a team has that moved churn's features into a view of
    their own and forgot `make materialize`. The offline store reads it like any other."""
    from feast import FeatureService, FeatureView, Field
    from feast.types import Float64

    from core.feature_sets import CHURN_FEATURES

    like = feature_store.get_feature_view("customer_spend_mix")
    view = FeatureView(name=f"{name}_features", entities=[feature_store.get_entity("customer")], ttl=like.ttl,
                       schema=[Field(name=f, dtype=Float64) for f in CHURN_FEATURES], source=like.batch_source, online=True)
    feature_store.apply([view, FeatureService(name=name, features=[view])])
    return name


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    return get_settings(data_dir=tmp_path_factory.mktemp("pipeline"), n_customers=1500, fraud_sample=40_000, seed=11)


@pytest.fixture(scope="session")
def built(settings):
    make_data(settings, progress=False)
    summary = build_features(settings, progress=False)
    first = train_all(settings, progress=False)
    return summary, first


@pytest.fixture(scope="session")
def table(built, settings):
    """The feature table by snapshot, then customer (the file holds it partition by partition)."""
    table = pd.read_parquet(settings.features_dir / "customer_features.parquet")
    return table.sort_values(["event_timestamp", "customer_id"], ignore_index=True)


@pytest.fixture(scope="session")
def served_models(built, settings):
    """The champion versions in the BentoML store (BENTOML_HOME is per test session)."""
    from rollout.import_models import FAMILIES, import_family

    return {name: import_family(name, "champion", settings.tracking_uri) for name in FAMILIES}


def start_server(settings, tmp_path: Path, **env) -> tuple[subprocess.Popen, str]:
    """A real `bentoml serve` of the entry service on a free port, once /ready answers 200. The
    tests of what the service does serve with AUTH_MODE=off, set explicitly as a user would; the
    authentication and rollout tests pass AUTH_MODE=on (the default of a plain serve).

    Each server has a BentoML home of its own that shares the session's model store: a `bentoml
    serve` empties $BENTOML_HOME/prometheus_multiproc_dir when it starts, which would wipe the
    metrics of a server still running on the same home."""
    env.setdefault("AUTH_MODE", "off")
    env.setdefault("SERVING_GRPC_PORT", "0")  # several servers at once: a test that calls gRPC gives each its own port
    env.setdefault("SERVING_GRPC_HOST", "127.0.0.1")
    env.setdefault("PYTHONOPTIMIZE", "1")  # as `make serve` and the image run it: half the start-up
    port = free_port()
    home = tmp_path / f"bentoml-{port}"
    home.mkdir(parents=True)
    (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
    env.setdefault("BENTOML_HOME", str(home))
    command = [str(Path(sys.executable).with_name("bentoml")), "serve", "bentos.service:FintechAPI",
               "--host", "127.0.0.1", "--port", str(port)]
    try:
        process = start(command, port, "/ready", tmp_path / f"serve-{port}.log", {"DATA_DIR": str(settings.data_dir), **env})
    except ServerDidNotStart as e:
        pytest.fail(str(e))
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def tracking_uri_kept():
    """For a module that registers in process: mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI
    in this process's environment; left at the module's copy, the next modules' servers would
    inherit it and serve from the copy."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def own_copy(settings, tmp_path_factory, name: str):
    """The session's data folder copied (features, Feast stores, registry): one module's alone."""
    folder = tmp_path_factory.mktemp(name) / "data"
    shutil.copytree(settings.data_dir, folder, ignore=shutil.ignore_patterns("inference_log", "reports", "logs", "model_cache"))
    return settings.model_copy(update={"data_dir": folder})


class RedisServer:
    """A real redis-server on a free port, which a test may kill and start again: `save()` writes
    its data to a dump file in `workdir`, which it loads when it starts."""

    def __init__(self, workdir: Path):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server); the Redis tests need a real one")
        self.workdir, self.port = workdir, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def start(self) -> RedisServer:
        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    pytest.fail(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)

    def save(self) -> None:
        self.client().save()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class MlflowServer:
    """A real `mlflow server` on a free port over a registry database; `pause()` stops its processes
    (SIGSTOP: it accepts connections and never answers), `resume()` lets them go on. `args` and `env`
    are added to its command and environment (its basic-auth app, say)."""

    def __init__(self, backend_uri: str, workdir: Path, args: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.backend_uri, self.workdir, self.port = backend_uri, workdir, free_port()
        self.args, self.env = args, env or {}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        command = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", self.backend_uri,
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1", *self.args]
        with (self.workdir / "mlflow-server.log").open("w") as log:
            # without job execution: its job consumers poll without pause, taking a core between them
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"mlflow server did not start on port {self.port}; see {self.workdir / 'mlflow-server.log'}")

    def _signal(self, sig: int) -> None:
        os.killpg(self.process.pid, sig)  # the server and the uvicorn it runs

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)


@dataclass(frozen=True)
class SharedServer:
    process: subprocess.Popen
    url: str
    log: Path


@pytest.fixture(scope="session")
def shared_server(settings, served_models, tmp_path_factory):
    """One `bentoml serve` (SQLite, AUTH_MODE=off, following the registry every 5 s) for the modules
    that only send it requests: the routes (test_serving), hostile input (test_fuzz) and the soak.
    A server takes about 18 s to start here; the modules that change how it runs start their own."""
    tmp_path = tmp_path_factory.mktemp("shared-serve")
    process, url = start_server(settings, tmp_path, ONLINE_STORE="sqlite", SERVING_REGISTRY_POLL_S="5")
    yield SharedServer(process, url, tmp_path / f"serve-{urlparse(url).port}.log")
    stop(process)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


class LoadClient:
    """Threads that score random known customers without pause, keeping every answer."""

    def __init__(self, url: str, customers: list[str], threads: int = 6, headers: dict | None = None):
        self.url, self.customers, self.threads, self.headers = url, customers, threads, headers
        self.answers: list[tuple[float, str, str, str, str]] = []  # time, customer, version, role, request id
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, args=(seed,)) for seed in range(threads)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=30, headers=self.headers) as client:
            while not self._stop.is_set():
                customer = rng.choice(self.customers)
                try:
                    response = client.post(f"{self.url}/api/v1/inference/churn-score", json={"customer_id": customer})
                except httpx.HTTPError as e:
                    self.failures.append(f"{customer}: {e!r}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{customer}: {response.status_code} {response.text[:200]}")
                    continue
                model = response.json()["model"]
                self.answers.append((time.monotonic(), customer, model["version"], model["role"],
                                     response.headers["X-Request-ID"]))

    def __enter__(self):
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)


def wait_for(condition, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)
