"""Fraud: score a transaction from a form, the outcomes (accept, review, block) the service gave
and the transactions it held, and what the stored thresholds trade at the stated costs."""

import altair as alt
import pandas as pd
import streamlit as st

from core.decisions import OUTCOMES
from core.schema import CHANNELS, MERCHANT_CATEGORIES
from dashboard import ui

st.title("Fraud")
data, dashboard = ui.settings()

st.subheader("Score a transaction")
with st.form("fraud_form"):
    left, right = st.columns(2)
    customer_id = left.text_input("Customer id", value="C0000001", key="fraud_customer")
    amount = left.number_input("Amount (currency units)", min_value=0.01, max_value=1e9, value=120.0, step=10.0, key="fraud_amount")
    category = left.selectbox("Merchant category", MERCHANT_CATEGORIES)
    channel = right.selectbox("Channel", CHANNELS)
    country = right.text_input("Country (ISO 3166 alpha-2)", value="GB", max_chars=2)
    device = right.text_input("Device id", value="device-1")
    submitted = st.form_submit_button("Score")
if submitted:
    with ui.shown("Fraud score"):
        transaction = {"amount": amount, "merchant_category": category, "channel": channel,
                       "country": country.strip().upper(), "device_id": device.strip()}
        result = ui.service().fraud(customer_id.strip(), transaction)
        columns = st.columns(4)
        columns[0].metric("Outcome", result["outcome"])
        columns[1].metric("Fraud probability", f"{result['fraud_probability']:.2%}")
        columns[2].metric("Review from", f"{result['threshold']:.2%}")
        columns[3].metric("Block from", f"{result['block_threshold']:.2%}")
        for hit in result.get("rules", []):
            st.markdown(f"**Rule {hit['code']}** ({hit['rule']}): {hit['sentence']} → {hit['outcome']}")
        if result.get("principal_reasons"):
            st.markdown("**Principal reasons**: " + "; ".join(f"{r['code']}: {r['sentence']}" for r in result["principal_reasons"]))
        reasons = pd.DataFrame(result["reasons"])
        st.dataframe(reasons, hide_index=True)
        ui.source(f"the service: fraud-detection, fraud version {result['model']['version']} ({result['model']['role']})")

with ui.shown("Outcomes"):
    st.subheader("Outcomes the service gave")
    log = ui.inference_log("fraud", ("time", "customer_id", "version", "role", "score", "decision", "rules"))
    counts = log["decision"].astype(str).value_counts()
    columns = st.columns(len(OUTCOMES))
    for column, outcome in zip(columns, OUTCOMES):
        column.metric(outcome.capitalize(), f"{counts.get(outcome, 0):,}",
                      f"{counts.get(outcome, 0) / max(len(log), 1):.1%} of {len(log):,}", delta_color="off")
    held = log[log["decision"].isin(OUTCOMES[1:])].sort_values("time", ascending=False).head(50)
    if held.empty:
        st.info("The service has sent no transaction to review and blocked none yet.")
    else:
        st.markdown("**Recently sent to review or blocked**")
        st.dataframe(held.rename(columns={"score": "fraud probability", "decision": "outcome"}), hide_index=True)
    ui.source("the inference log of the fraud family (rows logged before outcomes existed say True or False)")

with ui.shown("Thresholds"):
    st.subheader("What the stored thresholds trade")
    champion = ui.champion("fraud")
    metrics = champion.metrics
    review, block = metrics.get("review_threshold"), metrics.get("block_threshold")
    if review is None:
        st.info(f"Fraud version {champion.version} was trained before outcomes existed (one threshold); retrain to see them.")
    else:
        columns = st.columns(4)
        columns[0].metric("Review from", f"{review:.2%}", f"{metrics['test_review_rate']:.2%} of transactions", delta_color="off")
        columns[1].metric("Block from", f"{block:.2%}", f"{metrics['test_block_rate']:.2%} of transactions", delta_color="off")
        columns[2].metric("Frauds stopped (reviewed or blocked)", f"{metrics['test_recall_stopped']:.1%}",
                          f"{metrics['test_recall_blocked']:.1%} blocked", delta_color="off")
        columns[3].metric("Cost per 1,000 transactions", f"{metrics['test_cost_per_1000']:,.0f}",
                          f"{metrics['test_cost_per_1000_accept_all']:,.0f} if all were accepted", delta_color="off")
    curve = ui.version_table(champion.run_id, "precision_recall")
    if curve is not None:
        long = curve.melt("threshold", ["precision", "recall"], var_name="measure", value_name="value")
        chart = alt.Chart(long).mark_line().encode(
            x=alt.X("threshold:Q", title="Threshold on the fraud probability", axis=alt.Axis(format=".0%")),
            y=alt.Y("value:Q", title="Precision or recall (test period)", axis=alt.Axis(format=".0%")),
            color=alt.Color("measure:N", title=None))
        marks = pd.DataFrame({"threshold": [t for t in (review, block) if t is not None]})
        if not marks.empty:
            chart += alt.Chart(marks).mark_rule(strokeDash=[4, 4]).encode(x="threshold:Q")
        st.altair_chart(chart, width="stretch")
    ui.source(f"the registry: fraud version {champion.version} (champion), its out-of-time test period",
              f"{champion.created:%Y-%m-%d %H:%M UTC}")
