"""Key-ordered concurrency: records with the same key run one at a time, in offset order; other keys in parallel.

A lane is one task per (partition, key) with a queue of that key's records. Lanes run within a partition too,
so one slow image holds up only the records of its own image. A record takes one of ``concurrency`` slots only
while it runs: records queued behind their own key hold none, so a burst of repeated keys leaves the slots to
records of other keys (the worker bounds how many records are admitted). A record that finishes is
reported to its partition's offsets, which decide what may be committed; a lane whose partition is let go stops
early and leaves its remaining records uncommitted for the next owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection

from aiokafka import ConsumerRecord, TopicPartition

from consumer.partitions import Abandoned, OwnedPartition
from consumer.records import partition_name

logger = logging.getLogger(__name__)

Lane = tuple[TopicPartition, bytes | None]
RunRecord = Callable[[ConsumerRecord, OwnedPartition], Awaitable[None]]


class KeyLanes:
    """The records admitted and not yet finished, by key; ``in_flight`` counts them."""

    def __init__(self, run: RunRecord, concurrency: int) -> None:
        self._run = run
        self._slots = asyncio.Semaphore(concurrency)
        self._queues: dict[Lane, deque[ConsumerRecord]] = {}
        self._tasks: dict[Lane, asyncio.Task[None]] = {}
        self.in_flight = 0
        self.finished = 0  # records finished since start: the engine commits every so many
        self.slot_freed = asyncio.Event()

    def admit(self, partition: TopicPartition, owned: OwnedPartition, record: ConsumerRecord) -> None:
        """Queue ``record`` behind the earlier records of its key."""
        owned.offsets.started(record.offset)
        self.in_flight += 1
        lane: Lane = (partition, record.key)
        queue = self._queues.get(lane)
        if queue is None:
            queue = self._queues[lane] = deque()
            self._tasks[lane] = asyncio.create_task(self._drain(lane, owned, queue), name=f"lane {lane}")
        queue.append(record)

    async def wait(self, partitions: Collection[TopicPartition], timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the lanes of ``partitions``; cancel those still running then."""
        lanes = [task for (partition, _), task in self._tasks.items() if partition in partitions]
        if not lanes:
            return
        _, late = await asyncio.wait(lanes, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            logger.warning("%d job(s) outlived the %s s drain and were cancelled", len(late), timeout_s)
            await asyncio.wait(late)

    async def _drain(self, lane: Lane, owned: OwnedPartition, queue: deque[ConsumerRecord]) -> None:
        """Run one key's records in offset order; stop early (uncommitted) if the partition is let go."""
        partition = lane[0]
        try:
            while queue:
                record = queue[0]
                await owned.acquire(self._slots)
                try:
                    await self._run(record, owned)
                finally:
                    self._slots.release()
                queue.popleft()
                owned.offsets.finished(record.offset)
                self.finished += 1
                self.in_flight -= 1
                self.slot_freed.set()
        except Abandoned:
            logger.info("left %d record(s) of %s uncommitted for the next owner", len(queue), partition_name(partition))
        except asyncio.CancelledError:
            logger.warning("cancelled %d record(s) of %s; they stay uncommitted", len(queue), partition_name(partition))
            raise
        finally:
            self.in_flight -= len(queue)
            self.slot_freed.set()
            queue.clear()
            del self._queues[lane], self._tasks[lane]
