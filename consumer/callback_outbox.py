"""Appending a finished job's callback to the callbacks topic, where the callback consumer delivers it.

The image lane only appends a record and goes on: a slow or failing receiver is the callback consumer's problem,
retried on its own topic and group, never holding up an image. The append happens where the job is finished
(done, or failed after its dead letter), and a failed append is :class:`DependencyUnavailable`, so the job's record
is tried again without spending an attempt; the retry finds the job already finished and appends again. Appending
twice is harmless: the delivery id derives from the image id and the status, and a delivered one is skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumer.errors import DependencyUnavailable
from core import tracing
from core.clients import one_line, stop_within
from core.jobs import Job, JobStatus
from core.kafka_connection import kafka_connection
from core.settings import Settings
from core.topics import ensure_topics
from schemas.callbacks import JobCallbackV1, callback_headers, encode_callback

SEND_TIMEOUT_S: Final = 10.0
# Fixed: changing it would give a callback appended before and after a deploy two delivery ids.
DELIVERY_NAMESPACE: Final = uuid.UUID("3c0f9a8e-52d4-4b8f-9d0a-7a61c2e4b5d3")


def delivery_id(image_id: str, status: JobStatus) -> uuid.UUID:
    """The id of the callback of ``image_id`` ending ``status``: one delivery however often it is appended."""
    return uuid.uuid5(DELIVERY_NAMESPACE, f"{image_id}:{status.value}")


def job_callback(job: Job) -> JobCallbackV1 | None:
    """The callback record of a finished ``job``; None when it asked for no callback."""
    if job.callback_url is None or job.status not in (JobStatus.DONE, JobStatus.FAILED):
        return None
    return JobCallbackV1.model_validate(
        {
            "delivery_id": delivery_id(job.image_id, job.status),
            "image_id": job.image_id,
            "status": job.status.value,
            "callback_url": job.callback_url,
            "owner": job.owner,
            "finished_at": job.finished_at or job.updated_at,
            "error": job.error,
        }
    )


class CallbackOutbox:
    """The worker's producer of callback records, started at the first callback and stopped by :meth:`aclose`."""

    def __init__(self, settings: Settings, *, worker_id: str = "") -> None:
        self._settings = settings
        self._worker_id = worker_id
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def append(self, job: Job) -> None:
        """Append ``job``'s callback (if it asked for one) and wait for the ack; raises DependencyUnavailable."""
        callback = job_callback(job)
        if callback is None:
            return
        topic, key = self._settings.callbacks_topic, job.image_id.encode()
        try:
            # In the job's trace: the callback's delivery continues it (core/tracing.py).
            with tracing.producing(topic, key=key) as trace_headers:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    producer = await self._started()
                    await producer.send_and_wait(
                        topic,
                        key=key,
                        value=encode_callback(callback),
                        headers=[*callback_headers(callback), *trace_headers],
                    )
        except TimeoutError as exc:
            raise DependencyUnavailable(f"the callbacks topic did not ack within {SEND_TIMEOUT_S:g} s") from exc
        except (KafkaError, OSError) as exc:
            raise DependencyUnavailable(f"cannot append the callback of job {job.image_id}: {one_line(exc)}") from exc

    async def aclose(self) -> None:
        if self._producer is not None:
            await stop_within(self._producer, SEND_TIMEOUT_S)
            self._producer = None

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                await ensure_topics(self._settings, [self._settings.callbacks_topic])
                producer = AIOKafkaProducer(
                    **kafka_connection(self._settings),
                    enable_idempotence=True,
                    acks="all",
                    client_id=f"image-worker-callbacks-{self._worker_id}" if self._worker_id else None,
                )
                try:
                    await producer.start()
                except BaseException:
                    await stop_within(producer, SEND_TIMEOUT_S)
                    raise
                self._producer = producer
            return self._producer
