"""Fraud: score a transaction from a form, the transactions the service flagged, and what the
stored threshold trades between precision and recall."""

import altair as alt
import pandas as pd
import streamlit as st

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
        columns = st.columns(3)
        columns[0].metric("Decision", "flag as fraud" if result["is_fraud"] else "allow")
        columns[1].metric("Fraud probability", f"{result['fraud_probability']:.2%}")
        columns[2].metric("Threshold", f"{result['threshold']:.2%}")
        if result.get("principal_reasons"):
            st.markdown("**Principal reasons**: " + "; ".join(f"{r['code']}: {r['sentence']}" for r in result["principal_reasons"]))
        reasons = pd.DataFrame(result["reasons"])
        st.dataframe(reasons, hide_index=True)
        ui.source(f"the service: fraud-detection, fraud version {result['model']['version']} ({result['model']['role']})")

with ui.shown("Flagged transactions"):
    st.subheader("Recently flagged by the service")
    log = ui.inference_log("fraud", ("time", "customer_id", "version", "role", "score", "decision"))
    flagged = log[log["decision"].astype(str).str.lower().isin(["true", "1"])].sort_values("time", ascending=False).head(50)
    st.metric("Flagged / scored (inference log)", f"{len(log[log['decision'].astype(str).str.lower().isin(['true', '1'])]):,} / {len(log):,}")
    if flagged.empty:
        st.info("The service has flagged no transaction yet.")
    else:
        st.dataframe(flagged.rename(columns={"score": "fraud probability"}), hide_index=True)
    ui.source("the inference log of the fraud family")

with ui.shown("Threshold"):
    st.subheader("Precision and recall of the stored threshold")
    champion = ui.champion("fraud")
    curve = ui.version_table(champion.run_id, "precision_recall")
    threshold = champion.metrics.get("threshold")
    columns = st.columns(3)
    columns[0].metric("Threshold", f"{threshold:.2%}" if threshold is not None else "not recorded")
    columns[1].metric("Precision at it (test)", f"{champion.metrics.get('test_precision_at_threshold', float('nan')):.1%}")
    columns[2].metric("Recall at it (test)", f"{champion.metrics.get('test_recall_at_threshold', float('nan')):.1%}")
    if curve is None:
        st.info(f"Fraud version {champion.version} was trained before the precision-recall table was stored; retrain to see it.")
    else:
        long = curve.melt("threshold", ["precision", "recall"], var_name="measure", value_name="value")
        chart = alt.Chart(long).mark_line().encode(
            x=alt.X("threshold:Q", title="Threshold on the fraud probability", axis=alt.Axis(format=".0%")),
            y=alt.Y("value:Q", title="Precision or recall (test period)", axis=alt.Axis(format=".0%")),
            color=alt.Color("measure:N", title=None))
        if threshold is not None:
            chart += alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(strokeDash=[4, 4]).encode(x="threshold:Q")
        st.altair_chart(chart, width="stretch")
    ui.source(f"the registry: fraud version {champion.version} (champion), its out-of-time test period",
              f"{champion.created:%Y-%m-%d %H:%M UTC}")
