"""Adaptive batching in the process that answers: concurrent single-customer requests become one
feature read and one model call.

    batcher = Batcher(score_batch, max_batch_size=256)
    result = await batcher.submit({"customer_id": "C0000001"})

The batch runs on the event loop itself, between two turns of it. While one batch is scored the
loop reads no sockets, so the requests that arrive meanwhile are parsed together on the next turn
and make the next batch: the busier the service, the larger its batches. When requests arrive
closer together than max_wait_ms (a moving average of the gaps between them), the first request of
a batch also waits up to max_wait_ms for the company it can expect; when they arrive further apart,
or a lone request comes to an idle service, it goes at once.

Why not BentoML's own batcher: it batches an API whose input is already a list, so the public body
would have to be a list too, and its dispatcher lives behind an HTTP hop between two services
(docs/design/decisions/in-process-batcher.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

GAP_WEIGHT = 0.2  # of the newest gap in the moving average: a few quiet gaps end the waiting


class Batcher:
    def __init__(self, score: Callable[[list[dict]], list[dict]], max_batch_size: int, max_wait_ms: float = 0.0):
        """`score` takes a list of requests and returns one result per request, in order."""
        self.score, self.max_batch_size, self.max_wait_s = score, max_batch_size, max_wait_ms / 1000
        self._waiting: list[tuple[dict, asyncio.Future]] = []
        self._scheduled: asyncio.Handle | None = None
        self._last_arrival: float | None = None  # loop time of the last request
        self._gap = float("inf")  # moving average of the time between requests, seconds

    async def submit(self, request: dict) -> dict:
        """This request's result, scored in a batch with whatever else is waiting; the batch's
        exception if scoring it failed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((request, future))
        if self.max_wait_s:
            self._arrived(loop.time())
        if len(self._waiting) >= self.max_batch_size:
            self._run()
        elif self._scheduled is None:
            company_expected = self._gap < self.max_wait_s
            self._scheduled = loop.call_later(self.max_wait_s, self._run) if company_expected else loop.call_soon(self._run)
        return await future

    def _arrived(self, now: float) -> None:
        if self._last_arrival is not None:
            gap = now - self._last_arrival
            self._gap = gap if self._gap == float("inf") else GAP_WEIGHT * gap + (1 - GAP_WEIGHT) * self._gap
        self._last_arrival = now

    def _run(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        # submit runs a batch the moment it is full, so a batch never holds more than max_batch_size
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        try:
            results = self.score([request for request, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"scored {len(results)} results for {len(batch)} requests")
        except Exception as e:
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():  # a request that timed out or whose client left is no longer waited for
                future.set_result(result)
