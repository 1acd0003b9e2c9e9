"""The peer consumer: FastStream's ``KafkaBroker`` subscriber running the same handler as the Worker does.

Two acknowledgement policies, as a FastStream user would choose between them:

- ``AckPolicy.ACK``: commit after the handler returned (at-least-once, like ours). With ``max_workers`` FastStream
  then runs one consumer per worker, each a group member, so its concurrency is bound by the partitions.
- ``AckPolicy.ACK_FIRST``, FastStream's default: commit when the record is received, before the handler runs;
  ``max_workers`` then runs records concurrently in one consumer. A crash loses the records it had taken, and
  two records of one key may run at once: faster, but not the same guarantee.

Bench only: one subscriber, no retries or dead letters (no record here fails).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from consumer.retry import RecordHandler
from core.settings import Settings


class FastStreamConsumer:
    """Consume ``settings.images_topic`` in ``settings.consumer_group`` through FastStream; ``run`` until ``stop``."""

    def __init__(self, settings: Settings, handler: RecordHandler, ack_policy: AckPolicy, max_workers: int) -> None:
        self._settings = settings
        self._handler = handler
        self._ack_policy = ack_policy
        self._max_workers = max_workers
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        broker = KafkaBroker(self._settings.kafka_bootstrap_servers, log_level=logging.WARNING)
        handler = self._handler

        @broker.subscriber(
            self._settings.images_topic,
            group_id=self._settings.consumer_group,
            auto_offset_reset="earliest",
            ack_policy=self._ack_policy,
            max_workers=self._max_workers,
        )
        async def on_event(_body: Any, message: KafkaMessage) -> None:
            record: ConsumerRecord = message.raw_message
            await handler.handle(record, 1)

        await broker.start()
        try:
            await self._stopping.wait()
        finally:
            await broker.stop()
