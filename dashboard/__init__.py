"""The dashboard (Streamlit): what the retention team, the fraud analysts and the models' owners
look at. It is a client of the service's HTTP API for every score and explanation; history comes
from the data files, versions and metrics from the MLflow registry, drift from the newest report.

    make dashboard        # streamlit run dashboard/app.py on :8501, against $SERVICE_URL
"""
