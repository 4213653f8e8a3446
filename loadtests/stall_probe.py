"""Whether the machine stalled while something was measured: a process that asks to wake every
millisecond, and how late each wake-up came.

    with StallProbe(server_pid) as probe:
        ...                      # the measurement
    probe.result                 # {"wakeups": 9811, "longest_ms": 1.9, "over_5ms": 0, "late_ms_p99": 0.31,
                                 #  "server_major_faults": 0}

It runs as a process of its own, so neither the load generator's work nor its interpreter lock
delays it: it is late when the machine did not give a runnable process a core (another tenant of
the host, the host itself). A server is late then too, so a latency measured across a stall times
the machine, not the server. The probe costs a few percent of one core.

It also counts the major page faults of the measured server (the process and its children) over
the same time: pages of its code or data the kernel had dropped to make room and must read back
from disk, tens of milliseconds each, which a server on a node with memory to spare does not meet.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

INTERVAL_S = 0.001
STALL_MS = 5.0  # a wake-up this late counts as a stall


class StallProbe:
    """Starts the probe process on entry; on exit stops it and keeps its summary in `result`."""

    def __init__(self, server_pid: int | None = None):
        self.server_pid = server_pid

    def __enter__(self) -> Self:
        self.faults_before = major_faults(self.server_pid) if self.server_pid else 0
        self.process = subprocess.Popen([sys.executable, "-m", "loadtests.stall_probe"], stdout=subprocess.PIPE, text=True)
        self.result: dict = {}
        return self

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        self.result = json.loads(out)
        if self.server_pid:
            self.result["server_major_faults"] = major_faults(self.server_pid) - self.faults_before


def major_faults(pid: int) -> int:
    """Major page faults so far of a process and its descendants (those that exited not counted)."""
    import psutil

    total = 0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            stat = Path(f"/proc/{process.pid}/stat").read_text()
        except OSError:  # gone since it was listed
            continue
        total += int(stat.rsplit(")", 1)[1].split()[9])  # majflt, the 12th field; the name before it may hold spaces
    return total


def watch() -> dict:
    """Sleep INTERVAL_S at a time until SIGTERM; how late the wake-ups were."""
    stopping = False

    def stop(*_) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    late: list[float] = []
    while not stopping:
        asked = time.perf_counter()
        time.sleep(INTERVAL_S)
        late.append(1000 * (time.perf_counter() - asked - INTERVAL_S))
    late.sort()
    return {"wakeups": len(late), "longest_ms": round(late[-1], 2) if late else 0.0,
            "over_5ms": sum(ms > STALL_MS for ms in late),
            "late_ms_p99": round(late[int(len(late) * 0.99) - 1], 2) if len(late) >= 100 else None}


if __name__ == "__main__":
    print(json.dumps(watch()), flush=True)
