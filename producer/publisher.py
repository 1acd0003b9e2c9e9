"""Appending events to Kafka from the request path, with a hard time bound.

aiokafka's idempotent producer never expires a batch: while the broker is away, ``send()`` and its ack can
wait forever. Every publish here therefore runs under one deadline (``SEND_TIMEOUT_S``) that covers
connecting, sending and the ack; past it the caller gets :class:`BrokerUnavailable` and answers 503. A
publish that timed out may still be delivered once the broker is back, which is why every event has an id
and the workers skip ids they have processed.

The producer is (re)created lazily: the API starts and answers (503) with no broker, and recovers by itself
when one appears.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from core.settings import Settings
from core.topics import ensure_topics

logger = logging.getLogger(__name__)

ProducerFactory = Callable[[Settings], AIOKafkaProducer]

STOP_TIMEOUT_S = 5.0


class BrokerUnavailable(Exception):
    """The event was not acked in time: nothing is promised, the client should retry later."""


def idempotent_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer that writes each event once per partition (``acks=all``, idempotence on)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        request_timeout_ms=max(1000, int(settings.send_timeout_s * 1000)),
        client_id="image-api",
    )


class EventPublisher:
    """Sends records and waits for the broker's ack, never longer than ``settings.send_timeout_s``."""

    def __init__(self, settings: Settings, producer_factory: ProducerFactory = idempotent_producer) -> None:
        self._settings = settings
        self._producer_factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._connecting = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._cooling_until = 0.0

    async def start(self) -> None:
        """Try to connect now so the first request is fast; a missing broker is only logged."""
        try:
            async with asyncio.timeout(self._settings.send_timeout_s):
                await self._connected_producer()
        except (TimeoutError, KafkaError, OSError) as exc:
            logger.warning("Kafka not reachable at start-up (%s); will retry on first use", exc)

    async def stop(self) -> None:
        self._drop_producer()
        await asyncio.gather(*self._closing)

    async def publish(
        self, topic: str, *, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> RecordMetadata:
        """Append one record and return where it landed once the broker acked it."""
        self._refuse_while_cooling_down()
        try:
            async with asyncio.timeout(self._settings.send_timeout_s):
                producer = await self._connected_producer()
                ack = await producer.send(topic, value=value, key=key, headers=list(headers))
                metadata: RecordMetadata = await ack
                return metadata
        except TimeoutError as exc:
            self._cool_down()
            raise BrokerUnavailable(f"no ack from Kafka within {self._settings.send_timeout_s} s") from exc
        except (KafkaError, OSError) as exc:
            self._cool_down()
            raise BrokerUnavailable(f"Kafka refused the event: {exc!r}") from exc

    def _cool_down(self) -> None:
        """After a failed publish, drop the producer and answer 503 at once for ``RETRY_AFTER_S``.

        Left running against an absent broker, aiokafka's sender retries its metadata request in a tight loop
        (hundreds of attempts a second), starving the API; and its unsent batch could still reach Kafka after
        the client was told 503. A fresh producer is made on the first publish after the pause.
        """
        self._cooling_until = time.monotonic() + self._settings.retry_after_s
        self._drop_producer()

    def _refuse_while_cooling_down(self) -> None:
        remaining_s = self._cooling_until - time.monotonic()
        if remaining_s > 0:
            raise BrokerUnavailable(f"Kafka failed moments ago; trying again in {remaining_s:.1f} s")

    async def check(self) -> None:
        """Raise unless the broker answers a metadata request that lists the main topic."""
        self._refuse_while_cooling_down()
        try:
            async with asyncio.timeout(self._settings.send_timeout_s):
                producer = await self._connected_producer()
                cluster = await producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"Kafka not reachable: {exc!r}") from exc
        if self._settings.images_topic not in cluster.topics():
            raise BrokerUnavailable(f"topic {self._settings.images_topic!r} does not exist")

    async def _connected_producer(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._connecting:
            if self._producer is None:
                producer = self._producer_factory(self._settings)
                try:
                    await producer.start()
                    await ensure_topics(self._settings)
                except BaseException:
                    # Not awaited here: the caller's deadline must not wait for a slow close.
                    self._close_in_background(producer)
                    raise
                self._producer = producer
                logger.info("connected to Kafka at %s", self._settings.kafka_bootstrap_servers)
            return self._producer

    def _close_in_background(self, producer: AIOKafkaProducer) -> None:
        task = asyncio.create_task(_stop_within(producer, STOP_TIMEOUT_S))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            self._close_in_background(producer)


async def _stop_within(producer: AIOKafkaProducer, timeout_s: float) -> None:
    # stop() flushes pending batches, which with idempotence can wait forever for an absent broker.
    try:
        async with asyncio.timeout(timeout_s):
            await producer.stop()
    except TimeoutError:
        logger.warning("Kafka producer did not stop within %s s; its unacked events were answered with 503", timeout_s)
    except (KafkaError, OSError) as exc:
        logger.warning("Kafka producer stopped with an error: %r", exc)
