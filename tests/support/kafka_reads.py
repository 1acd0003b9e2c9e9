"""Reading back what landed on a topic, polling with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from core.kafka_connection import kafka_connection
from core.settings import Settings
from core.topics import topic_partitions


async def read_topic(
    settings: Settings, topic: str, *, timeout_s: float = 20.0, committed_only: bool = False
) -> list[ConsumerRecord]:
    """Every record on ``topic`` from the beginning to the end offsets as of the call, in partition order;
    with ``committed_only``, as workers see it (``read_committed``: no record of an open or aborted transaction)."""
    partitions = await topic_partitions(settings, topic)
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings),
        enable_auto_commit=False,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end_offsets = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        async with asyncio.timeout(timeout_s):
            while [tp for tp in partitions if await consumer.position(tp) < end_offsets[tp]]:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, batch in batches.items():
                    records.extend(record for record in batch if record.offset < end_offsets[tp])
        return sorted(records, key=lambda record: (record.partition, record.offset))
    finally:
        await consumer.stop()


async def partition_count(settings: Settings, topic: str) -> int:
    return len(await topic_partitions(settings, topic))
