"""Creating the pipeline's topics explicitly, with the partition count the settings ask for.

Brokers may auto-create topics with one partition on first use; that would silently cap a consumer group at
one useful worker, so the pipeline never relies on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from core.clients import running
from core.kafka_connection import kafka_connection
from core.settings import Settings

logger = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, topics: Sequence[str] = (), *, timeout_ms: int = 10_000) -> None:
    """Create those of ``topics`` (default: the main and dead-letter topics) that are missing; existing topics are
    left untouched.

    On a broker with ACLs a principal may lack the right to create (the API's may only write events): then the
    topic is left to whoever may create it, with a warning, and using it fails until it exists.
    """
    admin = AIOKafkaAdminClient(**kafka_connection(settings), request_timeout_ms=timeout_ms)
    async with running(admin):
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(topic, settings.topic_partitions, settings.topic_replication_factor)
            for topic in topics or (settings.images_topic, settings.dlq_topic)
            if topic not in existing
        ]
        if not missing:
            return
        response = await admin.create_topics(missing, timeout_ms=timeout_ms)
        created = []
        for topic, error_code, *_ in response.topic_errors:
            error = for_code(error_code)
            if error_code == 0:
                logger.info("created topic %s", topic)
                created.append(topic)
            elif error in (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                logger.warning("not allowed to create topic %s: it must be created by a principal that may", topic)
            elif error is not TopicAlreadyExistsError:
                raise error(f"could not create topic {topic}")
        await _until_led(admin, created, timeout_ms / 1000)


async def _until_led(admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float) -> None:
    """Wait until every partition of the new ``topics`` has a leader. A consumer that subscribes before the
    broker's metadata lists them is assigned no partition, and only sees them at its next metadata refresh
    (minutes later)."""
    try:
        async with asyncio.timeout(timeout_s):
            while topics:
                described = await admin.describe_topics(topics)
                if all(
                    topic["error_code"] == 0
                    and topic["partitions"]
                    and all(p["leader"] >= 0 for p in topic["partitions"])
                    for topic in described
                ):
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        logger.warning("topics %s still have partitions without a leader after %.0f s", topics, timeout_s)


class TopicMissing(LookupError):
    """The broker does not know the topic (topics are never created on first use here)."""


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The topic's partitions in order; raises :class:`TopicMissing` if the broker does not know the topic."""
    async with running(AIOKafkaAdminClient(**kafka_connection(settings))) as admin:
        [description] = await admin.describe_topics([topic])
    if description["error_code"] != 0 or not description["partitions"]:
        raise TopicMissing(f"topic {topic!r} does not exist")
    return sorted(TopicPartition(topic, partition["partition"]) for partition in description["partitions"])
