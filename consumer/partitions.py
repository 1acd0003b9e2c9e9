"""A partition while this worker owns it: its offsets in flight and the signal that it is being let go."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from consumer.offsets import PartitionOffsets


class Abandoned(Exception):
    """The record's partition was let go (revoked or shutting down) before it finished: leave it uncommitted."""


@dataclass(eq=False, slots=True)
class OwnedPartition:
    """Created on assignment, released once on revocation or shutdown; nothing new starts after the release."""

    offsets: PartitionOffsets = field(default_factory=PartitionOffsets)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self) -> None:
        self._released.set()

    async def acquire(self, slots: asyncio.Semaphore) -> None:
        """Take one of ``slots``; raise :class:`Abandoned` (holding none) if the partition is let go first."""
        if self.released:
            raise Abandoned
        if not slots.locked():
            await slots.acquire()  # free: taken without suspending
            return
        acquiring = asyncio.ensure_future(slots.acquire())
        letting_go = asyncio.ensure_future(self._released.wait())
        try:
            await asyncio.wait((acquiring, letting_go), return_when=asyncio.FIRST_COMPLETED)
        finally:
            letting_go.cancel()
            if self.released or not acquiring.done():  # let go, or cancelled while waiting: hold nothing
                _give_back(acquiring, slots)
        if self.released:
            raise Abandoned

    async def sleep(self, delay_s: float) -> None:
        """Wait ``delay_s`` (a retry's back-off); raise :class:`Abandoned` as soon as the partition is let go."""
        try:
            async with asyncio.timeout(delay_s):
                await self._released.wait()
        except TimeoutError:
            return
        raise Abandoned


def _give_back(acquiring: asyncio.Future[Literal[True]], slots: asyncio.Semaphore) -> None:
    if acquiring.done() and not acquiring.cancelled():
        slots.release()
    else:
        acquiring.cancel()
