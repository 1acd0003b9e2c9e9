"""The partition-bound consumer: at most one record per partition in flight, as most Kafka frameworks run.

One poll loop hands each partition's records to that partition's own task, which runs them one after another
with the same handler the worker uses, and commits ``offset + 1`` of the last finished record per partition
every ``commit_interval_s``. Its ceiling is ``partitions / job time``, whatever the concurrency setting: the
baseline that key-ordered concurrency is compared with. Bench only: it has no rebalance handling, retries or
dead letters, which the single-member runs here never need.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumer.retry import RecordHandler
from core.kafka_connection import kafka_connection
from core.settings import Settings

POLL_TIMEOUT_MS = 100
QUEUED_PER_PARTITION = 50  # fetching a partition pauses past this many waiting records


class PartitionBoundConsumer:
    """Consume ``settings.images_topic`` in ``settings.consumer_group`` with one sequential task per partition."""

    def __init__(self, settings: Settings, handler: RecordHandler) -> None:
        self._settings = settings
        self._handler = handler
        self._stopping = asyncio.Event()
        self._finished: dict[TopicPartition, int] = {}

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`; finished offsets are committed before leaving the group."""
        consumer = AIOKafkaConsumer(
            self._settings.images_topic,
            **kafka_connection(self._settings),
            group_id=self._settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        queues: dict[TopicPartition, asyncio.Queue[ConsumerRecord]] = {}
        tasks: list[asyncio.Task[None]] = []
        await consumer.start()
        try:
            last_commit = time.monotonic()
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                for partition, records in batches.items():
                    if partition not in queues:
                        queues[partition] = asyncio.Queue()
                        tasks.append(asyncio.create_task(self._run_partition(partition, queues[partition])))
                    for record in records:
                        queues[partition].put_nowait(record)
                for partition, queue in queues.items():
                    if queue.qsize() >= QUEUED_PER_PARTITION:
                        consumer.pause(partition)
                    elif queue.qsize() < QUEUED_PER_PARTITION // 2:
                        consumer.resume(partition)
                if time.monotonic() - last_commit >= self._settings.commit_interval_s:
                    await self._commit(consumer)
                    last_commit = time.monotonic()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._commit(consumer)
            await consumer.stop()

    async def _run_partition(self, partition: TopicPartition, queue: asyncio.Queue[ConsumerRecord]) -> None:
        while True:
            record = await queue.get()
            await self._handler.handle(record, 1)
            self._finished[partition] = record.offset

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        if self._finished:
            await consumer.commit({partition: offset + 1 for partition, offset in self._finished.items()})
