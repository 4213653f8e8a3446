"""Overview: the customer base and its transactions, churn by risk level, and what the service serves."""

import pandas as pd
import streamlit as st

from core.families import NAMES
from dashboard import sources, ui

st.title("Overview")
data, dashboard = ui.settings()

with ui.shown("Customers and transactions"):
    customers, daily = ui.customers(), ui.daily_transactions()
    first, last = daily["day"].min(), daily["day"].max()
    columns = st.columns(4)
    columns[0].metric("Customers", f"{len(customers):,}")
    columns[1].metric("Transactions", f"{int(daily['transactions'].sum()):,}")
    columns[2].metric("Volume", f"{daily['volume'].sum():,.0f}")
    columns[3].metric("Fraud rate (labelled)", f"{(daily['fraud_rate'] * daily['transactions']).sum() / daily['transactions'].sum():.2%}")
    by_day = daily.set_index("day").assign(frauds=lambda d: d["fraud_rate"] * d["transactions"], days=1)
    weekly = by_day.resample("W").agg({"transactions": "sum", "volume": "sum", "frauds": "sum", "days": "sum"})
    weekly = weekly[weekly["days"] == 7].assign(fraud_rate=lambda w: w["frauds"] / w["transactions"]).reset_index()
    left, right = st.columns(2)
    left.subheader("Volume per week")
    left.altair_chart(ui.line(weekly, "day:T", "volume:Q", "Week (UTC, whole weeks)", "Volume (currency units)"), width="stretch")
    right.subheader("Fraud rate per week")
    right.altair_chart(ui.line(weekly, "day:T", "fraud_rate:Q", "Week (UTC)", "Labelled fraud (% of transactions)", ".2%"),
                       width="stretch")
    ui.source(f"{data.customers_path.name} and {data.transactions_path.name} in {data.raw_dir}, "
              f"{first:%Y-%m-%d} to {last:%Y-%m-%d}", sources.modified(data.transactions_path))

with ui.shown("Churn rate by risk level"):
    st.subheader("Churn rate by risk level")
    version = ui.champion("churn")
    rates = pd.DataFrame([{"risk_level": level, "churn_rate": version.metrics.get(f"test_churn_rate_{level}")}
                          for level in ui.RISK_ORDER])
    st.altair_chart(ui.bars(rates, "risk_level:N", "churn_rate:Q", "Risk level", "Churned within the horizon (% of customers)",
                            ".0%", sort=ui.RISK_ORDER), width="stretch")
    ui.source(f"the registry: churn version {version.version} (champion), its out-of-time test snapshot",
              f"{version.created:%Y-%m-%d %H:%M UTC}")

with ui.shown("Serving"):
    st.subheader("What the service serves")
    status = ui.serving_status()
    rows = []
    for family in NAMES:
        if family not in status:
            rows.append({"family": family, "champion": "not served here", "challenger": "", "challenger share": "", "shadow": ""})
            continue
        versions = {v["role"]: v["version"] for v in status[family]["versions"]}
        rows.append({"family": family, "champion": versions.get("champion", ""), "challenger": versions.get("challenger", "none"),
                     "challenger share": f"{status[family]['challenger_share']:g}%", "shadow": "yes" if status[family]["shadow"] else "no"})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    counts = sources.requests_by_route(ui.service().request_summary())
    total = counts["requests"].sum()
    columns = st.columns(3)
    columns[0].metric("Requests served", f"{int(total):,}")
    columns[1].metric("Client errors (4xx)", f"{int(counts['client_errors'].sum()):,}")
    columns[2].metric("Server error rate (5xx)", f"{counts['server_errors'].sum() / total:.3%}" if total else "no requests yet")
    if not counts.empty:
        st.dataframe(counts.rename(columns={"client_errors": "4xx", "server_errors": "5xx", "error_rate": "5xx rate",
                                            "latency_p99_ms": "p99 latency (ms)"}),
                     hide_index=True, width="stretch", column_config={"5xx rate": st.column_config.NumberColumn(format="percent")})
    ui.source(f"the service at {', '.join(sorted({ui.service().url(f) for f in NAMES}))}: /models/status and /api/v1/inference/metrics (since its workers started)")
