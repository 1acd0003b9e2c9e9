"""Dead letters: a poison record, unchanged, on the DLQ topic with what is needed to debug and redrive it.

- The key and value are copied byte for byte (a redrive re-publishes them as they were); the original headers
  are kept, and the ``dlq.*`` headers of :class:`schemas.DeadLetterHeader` say where the record came from, how
  it failed (with a stable error code) and who gave up on it.
- The record's offset may be committed only after the DLQ acked the dead letter. A write that fails is tried
  again until it is acked or the partition is let go (then the next owner dead-letters the record), so nothing
  is lost between the two topics.
- The job is then marked failed, retried while the database is unavailable; the dead letter is safe whatever
  happens to that status.
"""

from __future__ import annotations

import asyncio
import logging
import traceback

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from consumer.errors import TransientError, error_code
from consumer.partitions import Abandoned, OwnedPartition
from consumer.records import coordinates
from consumer.retry import Failure, RecordHandler, RetryPolicy, until_done
from core.clients import stop_within
from core.kafka_connection import kafka_connection
from core.settings import Settings
from schemas import DEAD_LETTER_PREFIX, DeadLetterHeader

logger = logging.getLogger(__name__)

MAX_TRACEBACK_BYTES = 4096
MAX_MESSAGE_BYTES = 1024
SEND_TIMEOUT_S = 10.0


def dead_letter_headers(
    record: ConsumerRecord, failure: Failure, *, worker_id: str, consumer_group: str
) -> list[tuple[str, bytes]]:
    """The original headers (less any earlier ``dlq.*``) followed by this failure's ``dlq.*`` ones."""
    error = failure.error
    trace = "".join(traceback.format_exception(error))
    described = {
        DeadLetterHeader.ORIGINAL_TOPIC: record.topic,
        DeadLetterHeader.ORIGINAL_PARTITION: str(record.partition),
        DeadLetterHeader.ORIGINAL_OFFSET: str(record.offset),
        DeadLetterHeader.ORIGINAL_TIMESTAMP: str(record.timestamp),
        DeadLetterHeader.ERROR_CODE: error_code(error).value,
        DeadLetterHeader.ERROR_CLASS: f"{type(error).__module__}.{type(error).__qualname__}",
        DeadLetterHeader.ERROR_MESSAGE: _bounded(str(error), MAX_MESSAGE_BYTES),
        DeadLetterHeader.ERROR_TRACEBACK: _bounded(trace, MAX_TRACEBACK_BYTES, keep_end=True),
        DeadLetterHeader.ATTEMPTS: str(failure.attempts),
        DeadLetterHeader.FIRST_FAILURE_AT: failure.first_failure_at.isoformat(),
        DeadLetterHeader.LAST_FAILURE_AT: failure.last_failure_at.isoformat(),
        DeadLetterHeader.WORKER_ID: worker_id,
        DeadLetterHeader.CONSUMER_GROUP: consumer_group,
    }
    original = [(key, value) for key, value in record.headers if not key.startswith(DEAD_LETTER_PREFIX)]
    return original + [(name.value, value.encode()) for name, value in described.items()]


class DeadLetterQueue:
    """The worker's DLQ producer: publishes dead letters until acked, then has their jobs marked failed."""

    def __init__(self, settings: Settings, handler: RecordHandler, policy: RetryPolicy, *, worker_id: str) -> None:
        self._settings = settings
        self._handler = handler
        self._policy = policy
        self._worker_id = worker_id
        self._producer: AIOKafkaProducer  # made by start(): a client made is a client to close

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            **kafka_connection(self._settings),
            enable_idempotence=True,
            acks="all",
            client_id=f"image-worker-dlq-{self._worker_id}",
        )
        await self._producer.start()

    async def stop(self) -> None:
        """Stop the producer, bounded: with idempotence it would wait forever for an absent broker."""
        await stop_within(self._producer, SEND_TIMEOUT_S)

    async def dead_letter(self, record: ConsumerRecord, partition: OwnedPartition, failure: Failure) -> None:
        """Publish ``record`` to the DLQ and wait for the ack, then mark its job failed.

        Raises :class:`consumer.partitions.Abandoned` if the partition is let go before the DLQ acked.
        """
        headers = dead_letter_headers(
            record, failure, worker_id=self._worker_id, consumer_group=self._settings.consumer_group
        )

        async def send_and_wait_for_ack() -> None:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                ack = await self._producer.send(
                    self._settings.dlq_topic, key=record.key, value=record.value, headers=headers
                )
                await ack

        def on_refused(exc: Exception, delay_s: float) -> None:
            logger.error(
                "could not dead-letter record %s (%r); it stays uncommitted, next try in %.2f s",
                coordinates(record),
                exc,
                delay_s,
            )

        await until_done(
            send_and_wait_for_ack,
            (KafkaError, TimeoutError),
            policy=self._policy,
            partition=partition,
            on_retry=on_refused,
        )
        logger.error(
            "Processing record %s failed after %d attempt(s): %s: %s; sent to %s",
            coordinates(record),
            failure.attempts,
            type(failure.error).__name__,
            failure.error,
            self._settings.dlq_topic,
        )
        await self._mark_failed(record, partition, failure)

    async def _mark_failed(self, record: ConsumerRecord, partition: OwnedPartition, failure: Failure) -> None:
        """The retries end when the partition is let go; its next owner then runs the record (and dead-letters it)
        again."""

        def on_unavailable(exc: Exception, delay_s: float) -> None:
            logger.warning(
                "could not record the failure of record %s (%s); next try in %.2f s", coordinates(record), exc, delay_s
            )

        try:
            await until_done(
                lambda: self._handler.record_failure(record, failure.error, failure.attempts),
                (TransientError,),
                policy=self._policy,
                partition=partition,
                on_retry=on_unavailable,
            )
        except Abandoned:
            raise
        except Exception:
            logger.exception("could not record the failure of record %s", coordinates(record))


def _bounded(text: str, limit_bytes: int, *, keep_end: bool = False) -> str:
    """``text`` cut to ``limit_bytes`` of UTF-8; a traceback keeps its end, where the error is."""
    encoded = text.encode()
    if len(encoded) <= limit_bytes:
        return text
    marker = "...[cut]..."
    room = limit_bytes - len(marker)
    if keep_end:
        return marker + encoded[-room:].decode(errors="ignore")
    return encoded[:room].decode(errors="ignore") + marker
