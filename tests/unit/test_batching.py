"""The in-process batcher with a fake scorer: concurrent requests become one call."""

import asyncio

import pytest

from bentos.batching import Batcher


class Scorer:
    """Echoes each request's id and remembers the size of every batch it was given."""

    def __init__(self, fail: bool = False):
        self.batches: list[int] = []
        self.fail = fail

    def __call__(self, requests: list[dict]) -> list[dict]:
        self.batches.append(len(requests))
        if self.fail:
            raise RuntimeError("the store is down")
        return [{"customer_id": r["customer_id"]} for r in requests]


def submit_all(batcher: Batcher, n: int) -> list[dict]:
    async def main():  # a request left waiting fails the test instead of hanging it
        return await asyncio.wait_for(asyncio.gather(*(batcher.submit({"customer_id": f"C{i}"}) for i in range(n))), 5)
    return asyncio.run(main())


def test_concurrent_requests_are_scored_in_one_call_and_each_gets_its_own_result():
    scorer = Scorer()
    results = submit_all(Batcher(scorer, max_batch_size=256), 40)
    assert scorer.batches == [40]
    assert [r["customer_id"] for r in results] == [f"C{i}" for i in range(40)]


def test_a_batch_never_exceeds_the_maximum_size():
    scorer = Scorer()
    results = submit_all(Batcher(scorer, max_batch_size=16), 40)
    assert scorer.batches == [16, 16, 8] and len(results) == 40


def test_a_lone_request_does_not_wait_for_company():
    scorer = Scorer()

    async def main():
        batcher = Batcher(scorer, max_batch_size=256)
        started = asyncio.get_running_loop().time()
        await batcher.submit({"customer_id": "C1"})
        return asyncio.get_running_loop().time() - started
    assert asyncio.run(main()) < 0.01 and scorer.batches == [1]


def test_requests_arriving_closer_together_than_the_window_wait_for_company():
    scorer = Scorer()

    async def main():
        batcher = Batcher(scorer, max_batch_size=256, max_wait_ms=50)
        first = await batcher.submit({"customer_id": "C1"})  # the first of all: nothing to expect, at once
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.submit({"customer_id": "C2"}))  # 10 ms after it: company expected
        await asyncio.sleep(0.01)
        third = await batcher.submit({"customer_id": "C3"})
        return first, await second, third
    first, second, third = asyncio.run(main())
    assert scorer.batches == [1, 2]
    assert [r["customer_id"] for r in (first, second, third)] == ["C1", "C2", "C3"]


def test_requests_arriving_further_apart_than_the_window_never_wait():
    scorer = Scorer()

    async def main():
        batcher = Batcher(scorer, max_batch_size=256, max_wait_ms=50)
        waits = []
        for i in range(4):
            started = asyncio.get_running_loop().time()
            await batcher.submit({"customer_id": f"C{i}"})
            waits.append(asyncio.get_running_loop().time() - started)
            await asyncio.sleep(0.08)
        return waits
    assert max(asyncio.run(main())) < 0.03 and scorer.batches == [1, 1, 1, 1]


def test_a_failing_batch_fails_every_request_in_it():
    batcher = Batcher(Scorer(fail=True), max_batch_size=256)

    async def main():
        return await asyncio.gather(*(batcher.submit({"customer_id": f"C{i}"}) for i in range(3)), return_exceptions=True)
    outcomes = asyncio.run(main())
    assert all(isinstance(o, RuntimeError) for o in outcomes)


def test_a_scorer_that_loses_results_fails_the_batch_instead_of_hanging():
    batcher = Batcher(lambda requests: requests[:-1], max_batch_size=256)
    with pytest.raises(RuntimeError, match="2 results for 3 requests"):
        submit_all(batcher, 3)


def test_a_family_setting_is_read_under_the_service_prefix_only(monkeypatch):
    from bentos.config import ServingSettings

    monkeypatch.setenv("MAX_WAIT_MS", "7")  # another program's variable, not ours
    monkeypatch.setenv("SHADOW", "true")
    monkeypatch.setenv("SERVING_FRAUD__MAX_WAIT_MS", "3")
    settings = ServingSettings()
    assert settings.fraud.max_wait_ms == 3 and settings.churn.max_wait_ms == 1.0
    assert not settings.fraud.shadow and not settings.churn.shadow
