"""Shared fixtures: a tiny hand-made ledger, and small generated data sets."""

from __future__ import annotations

from datetime import date


def _typeguard_off() -> None:
    """Feast puts typeguard's @typechecked on its classes: checks meant for development, which
    re-parse Feast's modules when it is imported (11 s against 3.8 s here) and check every call.
    The service and the jobs run under python -O, where the decorator does nothing; so does this
    process, before anything imports Feast (pytest itself cannot run under -O: it would skip the
    asserts of every helper module)."""
    import typeguard

    typeguard.typechecked = lambda target=None, **_: (lambda later: later) if target is None else target


_typeguard_off()

import pandas as pd
import pytest

from training.generate import generate


def make_tx(rows: list[tuple]) -> pd.DataFrame:
    """rows: (customer_id, timestamp, amount, category, channel, country, device_id[, is_fraud])."""
    frame = pd.DataFrame(
        [r if len(r) == 8 else (*r, 0) for r in rows],
        columns=["customer_id", "timestamp", "amount", "merchant_category", "channel", "country", "device_id", "is_fraud"],
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame.insert(0, "transaction_id", [f"T{i}" for i in range(len(frame))])
    frame.insert(4, "merchant_id", "M1")
    frame["is_fraud"] = frame["is_fraud"].astype("int8")
    return frame


@pytest.fixture
def tiny_tx() -> pd.DataFrame:
    """Two customers, a handful of transactions before a snapshot on 2026-04-01."""
    return make_tx([
        ("A", "2026-01-10 10:00", 100.0, "groceries", "pos", "GB", "dA"),
        ("A", "2026-03-02 12:00", 50.0, "dining", "online", "GB", "dA"),
        ("A", "2026-03-22 12:00", 30.0, "groceries", "pos", "GB", "dA"),
        ("A", "2026-03-29 02:00", 20.0, "travel", "mobile", "FR", "dB"),
        ("B", "2025-12-01 09:00", 200.0, "retail", "pos", "DE", "dC"),
    ])


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory):
    """1,500 synthetic customers over 12 months (about 150k transactions), generated once."""
    out = tmp_path_factory.mktemp("raw")
    summary = generate(out, n_customers=1500, months=12, start=date(2025, 10, 1), seed=7, drift_months=2, progress=False)
    return out, summary


def pytest_configure(config):
    """Keep the BentoML model store of a test session apart from the user's (~/bentoml)."""
    import os
    import tempfile

    os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-test-")


@pytest.fixture
def local_ray(monkeypatch):
    """The Ray engine's Ray: a local one with 2 CPUs (never a cluster RAY_ADDRESS names), shut down after the test."""
    monkeypatch.setenv("RAY_NUM_CPUS", "2")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    import ray

    ray.shutdown()
