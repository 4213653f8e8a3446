"""Churn risk over the customer base: every customer of the newest snapshot scored through
churn-batch, the customers most at risk with their first reason and the action it calls for, and
the model's global importance."""

import time

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import retention, sources, ui

st.title("Churn risk")
data, dashboard = ui.settings()


def score_base(ids: list[str]) -> pd.DataFrame:
    """Every id through churn-batch, `batch_ids` at a time, with a progress bar."""
    progress = st.progress(0.0, text=f"Scoring {len(ids):,} customers through churn-batch…")
    parts = []
    for start in range(0, len(ids), dashboard.batch_ids):
        answer = ui.service().churn_batch(ids[start:start + dashboard.batch_ids])
        parts.append(pd.DataFrame(answer["results"]))
        done = min(start + dashboard.batch_ids, len(ids))
        progress.progress(done / len(ids), text=f"Scored {done:,} of {len(ids):,} customers")
    progress.empty()
    return pd.concat(parts, ignore_index=True)


with ui.shown("Scores over the customer base"):
    ids, snapshot = sources.latest_snapshot_ids(data)
    kept = st.session_state.get("churn_base")
    if st.button("Score again") or kept is None or time.time() - kept[0] > dashboard.score_cache_s or len(kept[2]) != len(ids):
        kept = (time.time(), ui.now(), score_base(ids))
        st.session_state["churn_base"] = kept
    scored_at, scored_at_text, scores = kept
    known = scores[scores["error"].isna()]
    columns = st.columns(3)
    columns[0].metric("Customers scored", f"{len(known):,}")
    columns[1].metric("Unknown to the store", f"{len(scores) - len(known):,}")
    columns[2].metric("Mean churn probability", f"{known['churn_probability'].mean():.1%}")
    left, right = st.columns(2)
    left.subheader("Distribution of churn probability")
    left.altair_chart(alt.Chart(known).mark_bar().encode(
        x=alt.X("churn_probability:Q", bin=alt.Bin(maxbins=40), title="Churn probability", axis=alt.Axis(format=".0%")),
        y=alt.Y("count():Q", title="Customers")), width="stretch")
    levels = known.groupby("risk_level").size().reindex(ui.RISK_ORDER, fill_value=0).rename("customers").reset_index()
    right.subheader("Risk levels")
    right.altair_chart(ui.bars(levels, "risk_level:N", "customers:Q", "Risk level", "Customers", sort=ui.RISK_ORDER), width="stretch")
    ui.source(f"the service's churn-batch over the {len(ids):,} customers of the feature snapshot of {snapshot:%Y-%m-%d}, "
              f"answered by version {' and '.join(sorted(known['version'].dropna().unique()))}", scored_at_text)

    st.subheader(f"The {dashboard.top_n} customers most at risk")
    top = known.nlargest(dashboard.top_n, "churn_probability")
    rows = []
    for customer_id, probability, level in top[["customer_id", "churn_probability", "risk_level"]].itertuples(index=False):
        scored = ui.service().churn_score(customer_id)
        reasons = scored.get("principal_reasons") or scored["reasons"]  # principal: the adverse decision's own
        first = next((r for r in reasons if r["direction"] == "increases risk"), reasons[0] if reasons else None)
        meaning, action = retention.action_for(first["feature"]) if first else retention.DEFAULT
        rows.append({"customer": customer_id, "churn probability": probability, "risk level": level,
                     "first reason": first["feature"] if first else "", "code": (first or {}).get("code") or "",
                     "for the customer": (first or {}).get("sentence") or "", "what it says": meaning, "action": action})
    st.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={"churn probability": st.column_config.NumberColumn(format="percent")})
    ui.source("the service: churn-score's first principal reason (or, below high risk, the first reason that raises "
              "it), its code and sentence from core/reason_codes.toml, and the retention table below")

with ui.shown("Global importance"):
    st.subheader("What drives churn risk overall")
    overall = ui.service().explain()
    importance = pd.DataFrame(sorted(overall["mean_abs_shap"].items(), key=lambda kv: -kv[1])[:15],
                              columns=["feature", "mean_abs_shap"])
    st.altair_chart(ui.bars(importance, "feature:N", "mean_abs_shap:Q", "Feature", "Mean |SHAP value| (log-odds)", ".3f",
                            sort="-x", horizontal=True), width="stretch")
    ui.source(f"the service: explain without a customer, churn version {overall['model']['version']} "
              "(mean |SHAP| on its test snapshot at training)")

st.subheader("Retention actions by first reason")
st.dataframe(pd.DataFrame([{"features starting with": ", ".join(prefixes), "what it says": meaning, "action": action}
                           for prefixes, meaning, action in retention.ACTIONS]), hide_index=True)
st.caption("Source: dashboard/retention.py, the team's playbook; edit it to match yours.")
