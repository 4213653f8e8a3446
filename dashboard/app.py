"""The dashboard's entry point: `streamlit run dashboard/app.py` (`make dashboard`).

Six pages; each is a script under pages/ that reads through dashboard.ui."""

import streamlit as st

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/customer.py", title="Customer", icon=":material/person_search:"),
    st.Page("pages/churn.py", title="Churn risk", icon=":material/trending_down:"),
    st.Page("pages/fraud.py", title="Fraud", icon=":material/gpp_maybe:"),
    st.Page("pages/segments.py", title="Segments", icon=":material/scatter_plot:"),
    st.Page("pages/performance.py", title="Model performance", icon=":material/monitoring:"),
]

st.set_page_config(page_title="Fintech serving", page_icon=":material/account_balance:", layout="wide")
st.navigation(PAGES).run()
