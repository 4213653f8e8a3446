"""What every page shares: the settings and the service client, the cached reads, how a failed
source is shown (a message, never a traceback), and labelled charts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import altair as alt
import pandas as pd
import streamlit as st

from core.api_keys import client_headers
from core.settings import Settings, get_settings
from dashboard import sources
from dashboard.client import Refused, ServiceClient, ServiceDown
from dashboard.settings import DashboardSettings, get_dashboard_settings

RISK_ORDER = ["low", "medium", "high", "critical"]
RISK_COLOURS = ["#4c9a2a", "#e3b505", "#e07a1f", "#c0392b"]


def settings() -> tuple[Settings, DashboardSettings]:
    """Read on every run (a few microseconds), so a changed environment is followed."""
    return get_settings(), get_dashboard_settings()


def service() -> ServiceClient:
    data, dashboard = settings()
    return _client(dashboard.service_url, tuple(client_headers(data.secrets_dir).items()), dashboard.timeout_s,
                   tuple(sorted(dashboard.family_urls.items())))


@st.cache_resource
def _client(url: str, headers: tuple[tuple[str, str], ...], timeout_s: float,
            family_urls: tuple[tuple[str, str], ...]) -> ServiceClient:
    return ServiceClient(url, dict(headers), timeout_s, dict(family_urls))


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def source(text: str, when: str | None = None) -> None:
    """Where the numbers above come from, and when they were computed."""
    st.caption(f"Source: {text} · as of {when or now()}")


@contextmanager
def shown(what: str) -> Iterator[None]:
    """Run a part of a page; a source that is down or missing becomes a message naming it."""
    try:
        yield
    except ServiceDown as e:
        st.error(f"{what}: {e}")
    except sources.RegistryDown as e:
        st.error(f"{what}: {e}")
    except sources.SourceMissing as e:
        st.info(f"{what}: {e}")
    except Refused as e:
        st.warning(f"{what}: the service refused the request ({e.error}): {e.detail}")


# --- cached reads: each keyed by where it reads from, so another data folder or registry is read anew

def customers() -> pd.DataFrame:
    data = settings()[0]
    return _customers(data, str(data.customers_path))


@st.cache_data(ttl=600, show_spinner="Reading the customers…")
def _customers(_data: Settings, path: str) -> pd.DataFrame:
    return sources.read_customers(_data)


def daily_transactions() -> pd.DataFrame:
    data = settings()[0]
    return _daily_transactions(data, str(data.transactions_path))


@st.cache_data(ttl=600, show_spinner="Summing the transactions per day…")
def _daily_transactions(_data: Settings, path: str) -> pd.DataFrame:
    return sources.daily_transactions(_data)


def registered_model(family: str) -> sources.RegisteredModel:
    data, dashboard = settings()
    return _registered_model(data, data.tracking_uri, family, dashboard.timeout_s)


@st.cache_data(ttl=30, show_spinner="Reading the registry…")
def _registered_model(_data: Settings, tracking_uri: str, family: str, timeout_s: float) -> sources.RegisteredModel:
    return sources.registered_model(_data, family, timeout_s)


def version_table(run_id: str, name: str) -> pd.DataFrame | None:
    data, dashboard = settings()
    return _version_table(data, data.tracking_uri, run_id, name, dashboard.timeout_s)


@st.cache_data(ttl=300, show_spinner="Reading the registry…")
def _version_table(_data: Settings, tracking_uri: str, run_id: str, name: str, timeout_s: float) -> pd.DataFrame | None:
    return sources.version_table(_data, run_id, name, timeout_s)


def version_metadata(family: str, version: str) -> dict:
    data, dashboard = settings()
    return _version_metadata(data, data.tracking_uri, family, version, dashboard.timeout_s)


@st.cache_data(ttl=300, show_spinner="Reading the registry…")
def _version_metadata(_data: Settings, tracking_uri: str, family: str, version: str, timeout_s: float) -> dict:
    return sources.registry_metadata(_data, family, version, timeout_s)


def serving_status() -> dict:
    return service().status()


def inference_log(family: str, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    return sources.read_inference_log(settings()[0], family, list(columns) if columns else None)


def champion(family: str) -> sources.Version:
    model = registered_model(family)
    version = model.by_alias("champion")
    if version is None:
        raise sources.RegistryDown(f"{family} has no champion version in the registry: `make train` registers one.")
    return version


# --- charts ------------------------------------------------------------------------------------

def line(frame: pd.DataFrame, x: str, y: str, x_title: str, y_title: str, y_format: str = ",.0f") -> alt.Chart:
    return alt.Chart(frame).mark_line().encode(
        x=alt.X(x, title=x_title), y=alt.Y(y, title=y_title, axis=alt.Axis(format=y_format)),
        tooltip=[alt.Tooltip(x, title=x_title), alt.Tooltip(y, title=y_title, format=y_format)])


def bars(frame: pd.DataFrame, x: str, y: str, x_title: str, y_title: str, y_format: str = ",.0f",
         sort: list[str] | str | None = None, horizontal: bool = False) -> alt.Chart:
    category = alt.X(x, title=x_title, sort=sort) if not horizontal else alt.Y(x, title=x_title, sort=sort)
    value = alt.Y(y, title=y_title, axis=alt.Axis(format=y_format)) if not horizontal else \
        alt.X(y, title=y_title, axis=alt.Axis(format=y_format))
    encoding = {"x": category, "y": value} if not horizontal else {"y": category, "x": value}
    return alt.Chart(frame).mark_bar().encode(**encoding, tooltip=[x, alt.Tooltip(y, format=y_format)])
