"""Delivering completion callbacks: the callback consumer of a worker process.

It reads the callbacks topic in a consumer group of its own (``<CONSUMER_GROUP>.callbacks``) with the engine the
image lane uses (:class:`consumer.worker.Worker`): records of one image in order, others in parallel, an offset
committed only once its record is finished (delivered, or given up on), a waiting retry holding up only its own
image, a drain on revocation and shutdown. It runs as its own task beside the image lane and never blocks it.

Per record (one delivery), :class:`CallbackDelivery`:

- skips it when the delivery was already made (its attempts are in the job database, :mod:`core.callback_attempts`):
  a redelivered record, or one appended twice, is POSTed once;
- signs the JSON body with the job's API key's secret (``CALLBACK_SECRET`` for jobs submitted without a key), as
  :mod:`schemas.callbacks` says, and POSTs it under the SSRF guard (:mod:`consumer.callback_sender`);
- records the attempt, then retries a failed one with exponential back-off and jitter (``CALLBACK_BACKOFF_S`` up to
  ``CALLBACK_BACKOFF_MAX_S``) until ``CALLBACK_MAX_ATTEMPTS`` attempts, counted across redeliveries, were made. A
  URL that is not allowed (it resolves to a non-public address now) is given up on at once.
"""

from __future__ import annotations

import logging
import time
from typing import Final, TypeVar

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from consumer.callback_sender import CallbackSender, PostOutcome
from consumer.errors import (
    PermanentError,
    TransientError,
    UndecodableEvent,
    database_call,
    describe_error,
)
from consumer.metrics import Liveness, WorkerMetrics
from consumer.outcomes import Outcome
from consumer.records import coordinates
from consumer.worker import Worker
from core import tracing
from core.api_keys import ApiKeyStore
from core.callback_attempts import CallbackAttempt, CallbackAttempts
from core.jobs import JobStore, utc_now
from core.settings import Settings
from core.topics import ensure_topics
from core.urls import redact_url
from schemas.callbacks import (
    CallbackHeader,
    CallbackPayload,
    JobCallbackV1,
    MalformedCallback,
    decode_callback,
    signature,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

CALLBACKS_GROUP_SUFFIX: Final = ".callbacks"
DEAD_LETTER_SUFFIX: Final = ".dlq"
# The outcomes of a callback record, beside Outcome.SKIPPED_DUPLICATE (delivered before).
DELIVERED: Final = "callback_delivered"
GIVEN_UP: Final = "callback_given_up"


class CallbackNotDelivered(TransientError):
    """The attempt got no 2xx answer and attempts are left: try again after a back-off."""


def callback_engine_settings(settings: Settings) -> Settings:
    """The settings that make :class:`Worker` the callback consumer: the callbacks topic, a group and a dead-letter
    topic of its own, and the callback back-off. The engine's attempt limit is one above ``CALLBACK_MAX_ATTEMPTS``:
    :class:`CallbackDelivery` gives up itself, from the attempts in the database; only a record that can never be
    read (or a bug) reaches the engine's dead-letter topic."""
    return settings.model_copy(
        update={
            "images_topic": settings.callbacks_topic,
            "dlq_topic": settings.callbacks_topic + DEAD_LETTER_SUFFIX,
            "consumer_group": settings.consumer_group + CALLBACKS_GROUP_SUFFIX,
            "max_attempts": settings.callback_max_attempts + 1,
            "retry_backoff_s": settings.callback_backoff_s,
            "retry_backoff_max_s": settings.callback_backoff_max_s,
        }
    )


class CallbackDelivery:
    """Delivers one ``job_callback`` record per call (the engine's :class:`consumer.retry.RecordHandler`)."""

    def __init__(self, settings: Settings, jobs: JobStore, sender: CallbackSender, metrics: WorkerMetrics) -> None:
        self._settings = settings
        self._attempts = CallbackAttempts(jobs.engine)
        self._keys = ApiKeyStore(jobs.engine)
        self._sender = sender
        self._metrics = metrics

    async def handle(self, record: ConsumerRecord, attempt: int) -> str:
        try:
            callback = decode_callback(record.value)
        except MalformedCallback as exc:
            raise UndecodableEvent(f"undecodable callback record: {exc}") from exc
        delivery = str(callback.delivery_id)
        progress = await database_call(self._attempts.progress(delivery))
        if progress.delivered:
            logger.info("Skipping callback %s of job %s: delivered already", delivery, callback.image_id)
            return Outcome.SKIPPED_DUPLICATE
        limit = self._settings.callback_max_attempts
        if progress.attempts >= limit:
            logger.info(
                "Skipping callback %s of job %s: given up after %d attempts", delivery, callback.image_id, limit
            )
            return GIVEN_UP
        number = progress.attempts + 1
        final = number >= limit
        secret = await self._secret(callback.owner)
        if secret is None:
            outcome, final = PostOutcome(None, "no secret to sign it with (its API key is gone)"), True
        else:
            try:
                outcome = await self._post(callback, secret)
            except PermanentError as exc:  # the URL is not allowed (any more): asking again will not help
                outcome, final = PostOutcome(None, describe_error(exc)), True
        await database_call(
            self._attempts.record(
                CallbackAttempt(
                    delivery_id=delivery,
                    attempt=number,
                    image_id=str(callback.image_id),
                    url=str(callback.callback_url),
                    attempted_at=utc_now(),
                    status_code=outcome.status_code,
                    error=outcome.error,
                    delivered=outcome.delivered,
                )
            )
        )
        shown = redact_url(str(callback.callback_url))
        if outcome.delivered:
            self._metrics.callbacks_delivered.inc()
            logger.info(
                "Callback of job %s delivered to %s (attempt %d, %s)",
                callback.image_id,
                shown,
                number,
                coordinates(record),
            )
            return DELIVERED
        self._metrics.callback_failed_attempts.inc()
        if final:
            self._metrics.callbacks_given_up.inc()
            logger.warning(
                "Callback of job %s to %s given up after attempt %d: %s",
                callback.image_id,
                shown,
                number,
                outcome.error,
            )
            return GIVEN_UP
        raise CallbackNotDelivered(f"callback attempt {number} of job {callback.image_id} failed: {outcome.error}")

    async def record_failure(self, record: ConsumerRecord, error: BaseException, attempts: int) -> None:
        """A callback record on the callbacks dead-letter topic names no job to mark: logged only."""
        logger.error("Callback record %s dead-lettered after %d attempts: %s", coordinates(record), attempts, error)

    async def _secret(self, owner: str | None) -> str | None:
        if owner is None:
            secret = self._settings.callback_secret
            return None if secret is None else secret.get_secret_value()
        return await database_call(self._keys.callback_secret(owner))

    async def _post(self, callback: JobCallbackV1, secret: str) -> PostOutcome:
        body = CallbackPayload.of(callback).model_dump_json().encode()
        timestamp = int(time.time())
        headers = {
            CallbackHeader.DELIVERY_ID.value: str(callback.delivery_id),
            CallbackHeader.TIMESTAMP.value: str(timestamp),
            CallbackHeader.SIGNATURE.value: signature(secret, timestamp, body),
        }
        with tracing.step("post callback"):
            # The receiver may go on with the job's trace: W3C traceparent, as any traced HTTP client sends it.
            headers |= {name: value.decode() for name, value in tracing.trace_headers()}
            return await self._sender.post(str(callback.callback_url), body, headers)


class CallbackConsumer:
    """The callback consumer of one worker process: :meth:`run` until :meth:`stop`, then :meth:`aclose`."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        metrics: WorkerMetrics,
        *,
        worker_id: str | None = None,
        sender: CallbackSender | None = None,
    ) -> None:
        self._settings = callback_engine_settings(settings)
        self._sender = sender or CallbackSender(settings)
        delivery = CallbackDelivery(settings, jobs, self._sender, metrics)
        # Metrics of its own: the engine's record counters, lag and in-flight gauge are the image lane's names.
        # Its lines are its own (consumer.callbacks.engine), apart from the image lane's consumer.worker ones.
        engine_log = logging.getLogger(f"{__name__}.engine")
        self._engine = Worker(self._settings, delivery, metrics=WorkerMetrics(), worker_id=worker_id, log=engine_log)

    @property
    def liveness(self) -> Liveness:
        """Whether its poll loop runs and it is in its group: what the worker's /livez also answers for."""
        return self._engine.liveness

    async def run(self) -> None:
        """Consume until :meth:`stop`. A topic that cannot be created now is left to the outbox (which creates the
        callbacks topic at its first append) or an administrator: the subscription picks it up once it exists."""
        try:
            await ensure_topics(self._settings, [self._settings.images_topic, self._settings.dlq_topic])
        except (KafkaError, OSError) as exc:
            logger.warning("could not create the callback topics yet (%s); consuming them once they exist", exc)
        await self._engine.run()

    def stop(self) -> None:
        self._engine.stop()

    async def aclose(self) -> None:
        await self._sender.aclose()
