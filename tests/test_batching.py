"""Group commit: what waits at one moment is handled in one call, each waiter gets its own result."""

from __future__ import annotations

import asyncio

import pytest

from core.batching import Batcher


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail_on = fail_on
        self.release = asyncio.Event()

    async def handle(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        await self.release.wait()
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [item * 10 for item in items]


async def test_items_waiting_together_share_one_call_and_get_their_own_results() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.handle, max_batch=100, name="test")
    first = batcher.submit(1)
    await asyncio.sleep(0)  # the first call starts with item 1 alone
    rest = [batcher.submit(item) for item in (2, 3, 4)]
    recorder.release.set()

    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40]
    assert recorder.calls == [[1], [2, 3, 4]], "what arrived during a call waited for the next, all together"
    await batcher.aclose(1.0)


async def test_a_failed_call_fails_its_own_items_only() -> None:
    recorder = Recorder(fail_on=2)
    recorder.release.set()
    batcher = Batcher(recorder.handle, max_batch=100, name="test")
    failing = [batcher.submit(item) for item in (1, 2)]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert [type(result) for result in results] == [ValueError, ValueError]

    assert await batcher.submit(3) == 30, "the batcher lives on after a failed call"
    await batcher.aclose(1.0)


async def test_batches_are_at_most_max_batch() -> None:
    recorder = Recorder()
    recorder.release.set()
    batcher = Batcher(recorder.handle, max_batch=2, name="test")
    assert await asyncio.gather(*(batcher.submit(item) for item in range(5))) == [0, 10, 20, 30, 40]
    assert [len(call) for call in recorder.calls] == [2, 2, 1]
    await batcher.aclose(1.0)


async def test_close_waits_for_what_is_queued_then_cancels_the_rest() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.handle, max_batch=100, name="test")
    stuck = batcher.submit(1)
    await batcher.aclose(0.05)
    with pytest.raises(asyncio.CancelledError):
        await stuck
