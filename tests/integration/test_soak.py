"""A soak: a real `bentoml serve` (the session's shared server, which has served the other modules'
requests before) at 70% of the throughput it saturates at, for SOAK_SECONDS (20 in `make test`, 600
in `make soak`). No request may fail, and after the warm-up its workers may not
grow: resident memory by under 5%, open file descriptors and threads not at all over the second
half of the run."""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest

from loadtests.bench_serving import WRK_SCRIPT, wrk
from tests.integration.conftest import latest_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SCORE = "/api/v1/inference/churn-score"
CONNECTIONS = 16
SHARE_OF_SATURATION = 0.7


@dataclass
class Sample:
    at: float  # seconds into the soak
    rss: int
    fds: int
    threads: int


def sample_workers(process, started: float) -> Sample:
    """What the server's worker processes hold now, summed over them."""
    import psutil

    workers = psutil.Process(process.pid).children(recursive=True)
    return Sample(time.monotonic() - started, sum(w.memory_info().rss for w in workers), sum(w.num_fds() for w in workers),
                  sum(w.num_threads() for w in workers))


def paced(script: str, delay_ms: float) -> str:
    """A wrk script whose connections each wait `delay_ms` before sending their next request."""
    return script + f"\ndelay = function()\n  return {delay_ms:.3f}\nend\n"


def test_a_soak_at_70_percent_of_saturation_fails_nothing_and_grows_nothing(shared_server, table, tmp_path):
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (Debian: apt-get install wrk); the soak drives the service with it")
    seconds = int(os.environ.get("SOAK_SECONDS", "20"))
    ids = ",".join(f'"{c}"' for c in latest_rows(table, 500).index)
    script = WRK_SCRIPT % (ids, '{"customer_id":"', '"}')
    process, port = shared_server.process, urlparse(shared_server.url).port
    (tmp_path / "full.lua").write_text(script)
    saturation = wrk(port, tmp_path / "full.lua", 5, CONNECTIONS, SCORE)["requests_per_s"]
    # each connection's pause for the target rate, corrected by two short trials at it (one
    # left the soak at 50% of saturation once, on a busy machine)
    target = SHARE_OF_SATURATION * saturation
    delay_ms = 1000 * CONNECTIONS / target
    for _ in range(2):
        (tmp_path / "paced.lua").write_text(paced(script, delay_ms))
        trial = wrk(port, tmp_path / "paced.lua", 5, CONNECTIONS, SCORE)["requests_per_s"]
        delay_ms = max(0.0, delay_ms + 1000 * CONNECTIONS * (1 / target - 1 / trial))
    (tmp_path / "paced.lua").write_text(paced(script, delay_ms))

    samples: list[Sample] = []
    started, done = time.monotonic(), threading.Event()

    def watch() -> None:
        while not done.wait(min(5.0, seconds / 20)):
            samples.append(sample_workers(process, started))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        soak = wrk(port, tmp_path / "paced.lua", seconds, CONNECTIONS, SCORE)
    finally:
        done.set()
        watcher.join()

    assert soak["non_2xx"] == 0 and soak["socket_errors"] == 0
    assert 0.5 * saturation <= soak["requests_per_s"] <= 0.9 * saturation  # the load was what it claims
    warm = [s for s in samples if s.at >= max(10.0, 0.2 * seconds)]  # the heap and the caches reach their size
    first, last = warm[:3], warm[-3:]
    assert len(warm) >= 6
    growth = statistics.median(s.rss for s in last) / statistics.median(s.rss for s in first) - 1
    assert growth < 0.05
    # a file or thread open for a moment (a log write) is not growth, nor a descriptor or two opened
    # once and kept (a connection pool filling, a metric file made on first use: 43 -> 45 once in a
    # 60 s run, 43 -> 44 late in the second half of another); a leak is still growing in the second
    # half, in every sample of its end (one descriptor per 200 requests: 256 -> 299)
    second_half = warm[len(warm) // 2:][:3]
    assert min(s.fds for s in last) <= max(s.fds for s in second_half) + 2
    assert min(s.threads for s in last) <= max(s.threads for s in second_half)
    print(f"soak {seconds} s at {soak['requests_per_s']:.0f} req/s ({soak['requests_per_s'] / saturation:.0%} of the "
          f"{saturation:.0f} it saturates at): {soak['requests']} answers, none failed, p99 {soak['p99_ms']} ms; "
          f"worker RSS {first[0].rss / 2**20:.0f} -> {last[-1].rss / 2**20:.0f} MiB ({growth:+.1%} after warm-up), "
          f"fds {first[0].fds} -> {last[-1].fds}, threads {first[0].threads} -> {last[-1].threads}")
