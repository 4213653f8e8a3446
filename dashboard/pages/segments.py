"""Segments: their sizes and profiles in business units, a 2-D picture of them, and how the
shares the service assigns today compare with training."""

from datetime import UTC, datetime

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from core.feature_sets import SEGMENT_FEATURES
from core.registry import REFERENCE_ARTIFACT
from dashboard import ui

st.title("Segments")


def projection(sample: pd.DataFrame) -> pd.DataFrame:
    """The first two principal components of the (log1p, standardised) segment features: a picture
    of the sample, not a model: no point is assigned here, each keeps the segment training gave it."""
    x = np.log1p(sample[SEGMENT_FEATURES].clip(lower=0).to_numpy(dtype=float))
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    _, _, components = np.linalg.svd(x, full_matrices=False)
    points = x @ components[:2].T
    return pd.DataFrame({"component_1": points[:, 0], "component_2": points[:, 1], "segment_id": sample["score"].astype(int)})


with ui.shown("Segments at training"):
    champion = ui.champion("segment")
    profiles = ui.version_table(champion.run_id, "segment_profiles")
    names = ui.version_metadata("segment", champion.version)["segment_names"]
    if profiles is None:
        st.info(f"Segment version {champion.version} was trained before segment profiles were stored; retrain to see them.")
    else:
        st.subheader("Sizes")
        st.altair_chart(ui.bars(profiles, "segment_name:N", "share:Q", "Segment", "Customers at training (%)", ".0%", sort="-y"),
                        width="stretch")
        st.subheader("Profiles (segment centres, in business units)")
        units = {"days_since_last_txn": "days", "txn_count_90d": "transactions", "spend_90d": "currency units",
                 "avg_amount_90d": "currency units"}
        shown = profiles.set_index("segment_name")[SEGMENT_FEATURES].rename(
            columns=lambda c: f"{c} ({units.get(c, 'share')})").T
        st.dataframe(shown.style.format("{:,.2f}"), height=36 * (len(shown) + 1) + 4)
    ui.source(f"the registry: segment version {champion.version} (champion), its training customers",
              f"{champion.created:%Y-%m-%d %H:%M UTC}")

    sample = ui.version_table(champion.run_id, REFERENCE_ARTIFACT)
    if sample is not None:
        st.subheader("The segments in two dimensions")
        points = projection(sample.sample(min(3000, len(sample)), random_state=0))
        points["segment"] = points["segment_id"].astype(str).map(names)
        st.altair_chart(alt.Chart(points).mark_circle(size=12, opacity=0.6).encode(
            x=alt.X("component_1:Q", title="First principal component (standardised log features)"),
            y=alt.Y("component_2:Q", title="Second principal component"),
            color=alt.Color("segment:N", title="Segment")), width="stretch")
        ui.source(f"the registry: {REFERENCE_ARTIFACT} of segment version {champion.version}, "
                  f"{len(points):,} of its training customers with the segment training assigned")

with ui.shown("Shares served"):
    st.subheader("Shares served compared with training")
    log = ui.inference_log("segment", ("time", "version", "score"))
    log = log[log["version"] == champion.version]
    today = pd.Timestamp(datetime.now(UTC).date(), tz="UTC")
    window = log[log["time"] >= today]
    when = "today"
    if window.empty and not log.empty:
        last_day = log["time"].max().floor("D")
        window, when = log[log["time"] >= last_day], f"on {last_day:%Y-%m-%d} (none today)"
    if window.empty:
        st.info(f"The service has logged no segment assignment by version {champion.version} yet.")
    else:
        served = window["score"].astype(int).value_counts(normalize=True)
        k = int(champion.metrics.get("k", len(names)))
        compare = pd.DataFrame([{"segment": names.get(str(i), str(i)), "training": champion.metrics.get(f"segment_share_{i}", 0.0),
                                 when: float(served.get(i, 0.0))} for i in range(k)])
        long = compare.melt("segment", var_name="population", value_name="share")
        st.altair_chart(alt.Chart(long).mark_bar().encode(
            x=alt.X("segment:N", title="Segment"), xOffset="population:N",
            y=alt.Y("share:Q", title="Share of customers (%)", axis=alt.Axis(format=".0%")),
            color=alt.Color("population:N", title=None)), width="stretch")
        ui.source(f"the inference log of the segment family ({len(window):,} assignments {when}) and the registry's training shares")
