"""Customer search and profile: who they are, what they did, and what the service says about them now."""

import matplotlib.pyplot as plt
import numpy as np
import shap
import streamlit as st

from dashboard import sources, ui

st.title("Customer")
data, dashboard = ui.settings()

customer_id = None
with ui.shown("Search"):
    query = st.text_input("Customer id, or part of one", key="customer_query", placeholder="C0000042")
    found = sources.find_customers(ui.customers(), query) if query else None
    if found is not None and found.empty:
        st.warning(f"No customer id contains {query.strip()!r}.")
    elif found is not None:
        ids = found["customer_id"].tolist()
        if len(ids) > 1:
            st.caption(f"{len(ids)} customers match{' (the first 50)' if len(ids) == 50 else ''}.")
        customer_id = st.selectbox("Customer", ids, key="customer_pick")
        st.success(f"Found {customer_id}.")
    ui.source(f"{data.customers_path}", sources.modified(data.customers_path))

if customer_id:
    profile = ui.customers().set_index("customer_id").loc[customer_id]
    columns = st.columns(4)
    columns[0].metric("Customer", customer_id)
    columns[1].metric("Signed up", f"{profile['signup_date']:%Y-%m-%d}")
    columns[2].metric("Age", f"{profile['age']:.0f}")
    columns[3].metric("Home country", profile["home_country"])

    with ui.shown("Transactions"):
        history = sources.customer_transactions(data, customer_id)
        st.subheader(f"Transactions ({len(history):,})")
        if history.empty:
            st.info("No transactions on file for this customer.")
        else:
            monthly = history.set_index("timestamp")["amount"].resample("MS").agg(["sum", "size"]).reset_index()
            monthly.columns = ["month", "spend", "transactions"]
            st.altair_chart(ui.bars(monthly, "yearmonth(month):O", "spend:Q", "Month (UTC)", "Spend (currency units)"), width="stretch")
            left, right = st.columns(2)
            for column, title, where in (("merchant_category", "Category", left), ("channel", "Channel", right)):
                mix = history.groupby(column)["amount"].sum().reset_index()
                where.altair_chart(ui.bars(mix, f"{column}:N", "amount:Q", title, "Spend (currency units)",
                                           sort="-x", horizontal=True), width="stretch")
            st.dataframe(history.tail(20).iloc[::-1][["timestamp", "amount", "merchant_category", "channel", "country", "device_id"]],
                         hide_index=True)
        ui.source(f"{data.transactions_path}", sources.modified(data.transactions_path))

    with ui.shown("Churn score"):
        st.subheader("Churn risk now")
        score = ui.service().churn_score(customer_id)
        columns = st.columns(3)
        columns[0].metric("Churn probability", f"{score['churn_probability']:.1%}")
        columns[1].metric("Risk level", score["risk_level"])
        columns[2].metric(f"Churn model ({score['model']['role']})", f"v{score['model']['version']}")
        explained = ui.service().explain(customer_id)
        values = explained["values"]
        explanation = shap.Explanation(
            values=np.array([v["shap_value"] for v in values]), base_values=explained["base_value"],
            data=np.array([np.nan if v["feature_value"] is None else v["feature_value"] for v in values]),
            feature_names=[v["feature"] for v in values])
        shap.plots.waterfall(explanation, max_display=10, show=False)
        st.pyplot(plt.gcf(), clear_figure=True)
        plt.close("all")
        st.caption("Axis: the churn score in log-odds, before calibration. E[f(X)] is the model's average output, f(x) this "
                   "customer's; each bar is one feature's SHAP value, with the feature's value on the left.")
        ui.source(f"the service: churn-score and explain (exact SHAP values) of version {explained['model']['version']}")

    with ui.shown("Segment"):
        segment = ui.service().segment(customer_id)
        st.metric("Segment", f"{segment['segment_name']} (#{segment['segment_id']})")
        ui.source(f"the service: segment, version {segment['model']['version']}")

    with ui.shown("Recent fraud scores"):
        st.subheader("Recent fraud scores")
        log = ui.inference_log("fraud", ("time", "customer_id", "version", "score", "decision"))
        mine = log[log["customer_id"] == customer_id].sort_values("time", ascending=False).head(20)
        if mine.empty:
            st.info("The service has scored no transaction of this customer yet.")
        else:
            st.dataframe(mine.rename(columns={"score": "fraud probability", "decision": "flagged"}), hide_index=True)
        ui.source("the inference log of the fraud family (what the service scored)")
