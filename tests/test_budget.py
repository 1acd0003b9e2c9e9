"""The decode budget: reservations wait until they fit; an image that never could is refused."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from consumer.budget import DecodeBudget
from core.imaging import WORKING_COPIES, decode_cost_bytes


async def test_a_reservation_waits_until_the_one_before_it_is_released() -> None:
    budget = DecodeBudget(100)
    order: list[str] = []
    first_holds = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with budget.reserve(70):
            first_holds.set()
            await release_first.wait()
            order.append("first done")

    async def second() -> None:
        await first_holds.wait()
        async with budget.reserve(60):
            order.append("second started")

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await first_holds.wait()
    await asyncio.sleep(0)  # let the second reach its wait
    assert budget.in_use_bytes == 70
    release_first.set()
    await asyncio.gather(*tasks)
    assert order == ["first done", "second started"]
    assert budget.in_use_bytes == 0


async def test_a_cost_over_the_whole_budget_is_an_error() -> None:
    with pytest.raises(ValueError, match="can never fit"):
        async with DecodeBudget(100).reserve(101):
            pass


def test_the_cost_counts_bands_and_working_copies() -> None:
    assert decode_cost_bytes(Image.new("RGBA", (10, 20))) == 10 * 20 * 4 * WORKING_COPIES
    assert decode_cost_bytes(Image.new("L", (10, 20))) == 10 * 20 * 3 * WORKING_COPIES
