"""The memory of a process and everything it starts (Ray's raylet, GCS and workers among them),
sampled in a thread while it runs.

    with TreeMemory(process.pid) as memory:
        process.wait()
    memory.peak_rss, memory.peak_pss, memory.timeline

Resident memory (RSS) summed over the processes is an upper bound: a page shared between processes
(Ray's object store, the libraries' code) counts once per process. Proportional memory (PSS) splits
each shared page between the processes that map it, so its sum is what the tree takes from the machine.
"""

from __future__ import annotations

import threading
import time
from typing import Self

import psutil

SAMPLE_S = 0.5


class TreeMemory:
    """The largest summed RSS and PSS of a process and its descendants, and the PSS over time."""

    def __init__(self, pid: int, every_s: float = SAMPLE_S):
        self.root, self.every_s = psutil.Process(pid), every_s
        self.peak_rss = self.peak_pss = 0
        self.timeline: list[tuple[float, float]] = []  # (seconds since start, PSS in GB)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._started = time.monotonic()

    def _sample(self) -> None:
        while not self._done.wait(self.every_s):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = pss = 0
            for process in processes:
                try:
                    memory = process.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss = rss + memory.rss, pss + memory.pss
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.timeline.append((round(time.monotonic() - self._started, 1), round(pss / 2**30, 2)))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
