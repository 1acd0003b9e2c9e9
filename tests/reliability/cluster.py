"""A three-broker cluster under fault injection: whether its replicas are in sync, and which broker to kill."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from core.kafka_connection import kafka_connection
from core.settings import Settings

ADMIN_TIMEOUT_S = 10.0
OFFSETS_TOPIC = "__consumer_offsets"
REPLICAS = 3


async def describe(settings: Settings, topics: list[str]) -> list[dict[str, object]]:
    admin = AIOKafkaAdminClient(**kafka_connection(settings))
    async with asyncio.timeout(ADMIN_TIMEOUT_S):
        await admin.start()
        try:
            described: list[dict[str, object]] = await admin.describe_topics(topics)
        finally:
            await admin.close()
    return described


async def in_sync(settings: Settings) -> bool:
    """Every partition of the main topic and of the group offsets has a leader and all 3 replicas in sync."""
    try:
        described = await describe(settings, [settings.images_topic, OFFSETS_TOPIC])
    except (TimeoutError, OSError, KafkaError):  # a broker still starting may refuse: poll again
        return False
    for topic in described:
        partitions = topic["partitions"]
        if topic["error_code"] != 0 or not isinstance(partitions, list) or not partitions:
            return False
        if any(p["leader"] < 0 or len(p["isr"]) < REPLICAS for p in partitions):
            return False
    return True


async def busiest_partition_leader(settings: Settings) -> int:
    """The broker leading the main topic's partition with the most records."""
    [topic] = await describe(settings, [settings.images_topic])
    partitions = topic["partitions"]
    assert isinstance(partitions, list)
    leaders = {p["partition"]: p["leader"] for p in partitions}
    consumer = AIOKafkaConsumer(**kafka_connection(settings))
    async with asyncio.timeout(ADMIN_TIMEOUT_S):
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(settings.images_topic, p) for p in leaders])
        finally:
            await consumer.stop()
    busiest = max(ends, key=lambda tp: ends[tp])
    leader: int = leaders[busiest.partition]
    return leader
