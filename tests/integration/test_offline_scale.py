"""`make bench-offline-scale` in short: the same harness end to end on 1,500 customers (the features
CLI on a local Ray, a real redis-server as the online store), so the hour-long run is known to work
and to report what it measured."""

import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from loadtests.servers import ROOT
from training.pipeline import STAGES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_scale_benchmark_runs_the_features_stage_into_redis_and_reports_its_memory_and_stages(tmp_path):
    data, out = tmp_path / "data", tmp_path / "scale.json"
    done = subprocess.run([sys.executable, "-m", "loadtests.bench_offline_scale", "--customers", "1500", "--partitions", "3",
                           "--data-dir", str(data), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    generated = pq.ParquetFile(data / "raw" / "transactions.parquet").metadata.num_rows
    assert result["data"]["transactions"] == generated == result["data"]["accepted"] + result["data"]["rejected"]
    assert result["data"]["stream_rows"] == result["data"]["accepted"]  # a stream row per accepted transaction
    customers = pd.read_parquet(data / "features" / "customer_features.parquet", columns=["customer_id"])["customer_id"].nunique()
    assert result["online_keys"] == customers  # every customer with features was written to Redis
    assert 0 < result["peak_pss_gb"] <= result["peak_rss_gb"] < result["target_peak_rss_gb"]
    assert set(result["stages_s"]) == set(STAGES) and all(s > 0 for s in result["stages_s"].values())
    assert [e["workers"] for e in result["estimate_10m_customers"]] == [4, 16]
    assert out.with_suffix(".md").read_text().startswith("# Features stage at scale")
