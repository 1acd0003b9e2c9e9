"""The decode budget: how much memory the images being decoded and filtered at once may take.

Pillow decodes a whole image into memory and a filter makes a few working copies: a small, all-zero PNG can
stand for gigabytes. Each job reserves its image's estimated cost (:func:`core.imaging.decode_cost_bytes`, read
from the header before decoding) and waits while the reservations in flight would exceed the budget; a single
image that could never fit is refused as permanent by the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class DecodeBudget:
    """A weighted semaphore over bytes: reservations wait, in no particular order, until they fit."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.in_use_bytes = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, cost_bytes: int) -> AsyncIterator[None]:
        """Hold ``cost_bytes`` of the budget for the block; ``cost_bytes`` must not exceed the total."""
        if cost_bytes > self.total_bytes:
            raise ValueError(f"{cost_bytes} bytes can never fit a budget of {self.total_bytes}")
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use_bytes + cost_bytes <= self.total_bytes)
            self.in_use_bytes += cost_bytes
        try:
            yield
        finally:
            async with self._changed:
                self.in_use_bytes -= cost_bytes
                self._changed.notify_all()
