"""Adaptive batching in the process that answers: concurrent single-customer requests become one
feature read and one model call.

    batcher = Batcher(score_batch, max_batch_size=256)
    result = await batcher.submit({"customer_id": "C0000001"})

The batch runs on the event loop itself, between two turns of it. While one batch is scored the
loop reads no sockets, so the requests that arrive meanwhile are parsed together on the next turn
and make the next batch: the busier the service, the larger its batches, and an idle service
answers a lone request at once (max_wait_ms=0, the default). A positive max_wait_ms holds the first
request of a batch up to that long for company.

Why not BentoML's own batcher: it batches an API whose input is already a list, so the public body
would have to be a list too, and its dispatcher lives behind an HTTP hop between two services
(README, Serving).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Batcher:
    def __init__(self, score: Callable[[list[dict]], list[dict]], max_batch_size: int, max_wait_ms: float = 0.0):
        """`score` takes a list of requests and returns one result per request, in order."""
        self.score, self.max_batch_size, self.max_wait_s = score, max_batch_size, max_wait_ms / 1000
        self._waiting: list[tuple[dict, asyncio.Future]] = []
        self._scheduled: asyncio.Handle | None = None

    async def submit(self, request: dict) -> dict:
        """This request's result, scored in a batch with whatever else is waiting; the batch's
        exception if scoring it failed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((request, future))
        if len(self._waiting) >= self.max_batch_size:
            self._run()
        elif self._scheduled is None:
            self._scheduled = loop.call_later(self.max_wait_s, self._run) if self.max_wait_s else loop.call_soon(self._run)
        return await future

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
