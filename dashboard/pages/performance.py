"""Model performance, per family: the registry's versions and their test metrics, the churn
calibration curve, the canary and the evidence gathered so far, and the newest drift report."""

import altair as alt
import pandas as pd
import streamlit as st

from core.families import FAMILIES, NAMES
from dashboard import sources, ui
from rollout.promotion import flips_text, read_evidence
from rollout.settings import get_gate_settings

st.title("Model performance")
data, dashboard = ui.settings()
SKIP = ("train_rows", "valid_rows", "test_rows", "rows", "k", "threshold")


def versions_table(model: sources.RegisteredModel) -> pd.DataFrame:
    rows = []
    for v in model.versions:
        test = {name.removeprefix("test_"): value for name, value in v.metrics.items()
                if name.startswith("test_") and not name.startswith("test_churn_rate_")}
        rows.append({"version": v.version, "aliases": ", ".join(v.aliases), "registered": f"{v.created:%Y-%m-%d %H:%M UTC}",
                     **({"silhouette": v.metrics["silhouette"], "k": v.metrics.get("k")} if "silhouette" in v.metrics else {}),
                     **test})
    return pd.DataFrame(rows)


def calibration(version: sources.Version) -> None:
    curve = ui.version_table(version.run_id, "calibration_curve")
    if curve is None:
        st.info(f"Churn version {version.version} was trained before the calibration table was stored; retrain to see it.")
        return
    diagonal = alt.Chart(pd.DataFrame({"p": [0.0, float(curve["mean_predicted"].max())]})).mark_line(
        strokeDash=[4, 4], color="grey").encode(x="p:Q", y="p:Q")
    points = alt.Chart(curve).mark_line(point=True).encode(
        x=alt.X("mean_predicted:Q", title="Mean predicted churn probability (bin)", axis=alt.Axis(format=".0%")),
        y=alt.Y("observed_rate:Q", title="Observed churn rate (bin)", axis=alt.Axis(format=".0%")),
        tooltip=["mean_predicted", "observed_rate", "rows"])
    st.altair_chart(diagonal + points, width="stretch")
    ui.source(f"the registry: calibration_curve.csv of churn version {version.version}, "
              f"{int(curve['rows'].sum()):,} customers of its test snapshot in equal-count bins")


def canary(family: str, model: sources.RegisteredModel, status: dict, metrics_text: str) -> None:
    champion, challenger = model.by_alias("champion"), model.by_alias("challenger")
    live = {v["role"]: v["version"] for v in status.get(family, {}).get("versions", [])}
    columns = st.columns(4)
    columns[0].metric("Champion (registry / served)", f"{champion.version if champion else '—'} / {live.get('champion', '—')}")
    columns[1].metric("Challenger", challenger.version if challenger and champion and challenger.version != champion.version else "none")
    columns[2].metric("Challenger share", f"{model.share:g}%")
    columns[3].metric("Shadow", "on" if model.shadow else "off")
    cycle = status.get(family, {}).get("retrain_cycle")
    if cycle:
        st.caption(f"Last retraining cycle {cycle['id']} ({cycle['trigger']}, started {cycle['started']}): "
                   f"{cycle['outcome'] or 'at stage ' + cycle['stage']}" + (f" — {cycle['reason']}" if cycle.get("reason") else ""))
    if challenger is None or champion is None or challenger.version == champion.version:
        st.caption(f"No canary: `make canary MODEL={family}` starts one.")
        return
    evidence = read_evidence(metrics_text, family, champion.version, challenger.version)
    needed = get_gate_settings().min_predictions
    rows = [{"role": role, **e.summary()} for role, e in evidence.items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    got = evidence["challenger"].predictions
    st.progress(min(got / needed, 1.0), text=f"Evidence: {got:,} of the {needed:,} challenger predictions the gates need")
    ui.source(f"the registry's aliases and tags, and the service's /metrics at {ui.service().url(family)}")
    report = sources.newest_promotion_report(data, family, challenger.version)
    if report is not None and report.get("flips"):
        st.write(flips_text(report["flips"]))
        ui.source(f"the promotion report {report['path'].name} (make promote)", report["made"])
    else:
        st.caption(f"Decision flips: `python -m rollout status {family}` counts them so far (both versions score the "
                   "challenger's logged rows again); `make promote` reports them, and this page shows its newest report.")


def drift(family: str) -> None:
    report = sources.newest_drift_report(data, family)
    summary = report.summary
    columns = st.columns(3)
    columns[0].metric("Features drifted", f"{len(summary['drifted_features'])} of {summary['features']}")
    columns[1].metric("Drift share", f"{summary['drift_share']:.0%}")
    columns[2].metric("Prediction drift", "yes" if summary.get("prediction_drift", {}).get("drifted") else "no")
    if summary["drifted_features"]:
        st.write("Drifted: " + ", ".join(summary["drifted_features"]))
    if report.html.exists():
        st.download_button("Download the full report (HTML)", report.html.read_bytes(), file_name=f"{report.folder.name}.html",
                           mime="text/html", key=f"drift_{family}")
    ui.source(f"{report.folder} ({summary['current_rows']:,} served rows against {summary['reference_rows']:,} reference rows)",
              report.made)


for family, tab in zip(NAMES, st.tabs([name.capitalize() for name in NAMES])):
    with tab:
        model = None
        with ui.shown("Registry"):
            model = ui.registered_model(family)
            st.subheader("Versions and test metrics")
            st.dataframe(versions_table(model), hide_index=True)
            ui.source(f"the registry at {data.tracking_uri} (metrics on each version's out-of-time test data)")
            if FAMILIES[family].calibrated and model.by_alias("champion"):
                st.subheader("Calibration (champion)")
                calibration(model.by_alias("champion"))
        if model is not None:
            with ui.shown("Canary"):
                st.subheader("Canary")
                canary(family, model, ui.serving_status(), ui.service().prometheus(family))
        with ui.shown("Drift"):
            st.subheader("Newest drift report")
            drift(family)
