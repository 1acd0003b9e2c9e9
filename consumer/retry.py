"""Whether a failed record is tried again or dead-lettered, and how long it waits first.

- A :class:`PermanentError` goes to the DLQ at once; any other error is tried again up to ``max_attempts``.
- An unavailable database or blob store (:class:`DependencyUnavailable`) spends no attempt: the record waits for
  it, so an outage sends nothing to the DLQ.
- Back-off is exponential with jitter, and a waiting record holds up only its own key. A retry still waiting
  when its partition is let go is abandoned, uncommitted, so the partition's next owner runs it.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiokafka import ConsumerRecord

from consumer.errors import DependencyUnavailable, JobError, PermanentError
from consumer.metrics import WorkerMetrics
from consumer.outcomes import Outcome
from consumer.partitions import OwnedPartition
from consumer.records import coordinates, log_fields
from core import log_context, tracing
from core.jobs import utc_now
from core.settings import Settings

logger = logging.getLogger(__name__)


class RecordHandler(Protocol):
    """What the worker runs for each record (see :class:`consumer.handler.JobHandler`)."""

    async def handle(self, record: ConsumerRecord, attempt: int) -> str:
        """Process one record; return the outcome's name, raise to fail the attempt."""
        ...

    async def record_failure(self, record: ConsumerRecord, error: BaseException, attempts: int) -> None:
        """Note a dead-lettered record (e.g. mark its job failed)."""
        ...


@dataclass(frozen=True, slots=True)
class Failure:
    """How a record failed for good: the last error and when the attempts happened."""

    error: BaseException
    attempts: int
    first_failure_at: dt.datetime
    last_failure_at: dt.datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failing record is tried."""

    max_attempts: int
    backoff_s: float
    backoff_max_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.retry_backoff_s, settings.retry_backoff_max_s)

    def delay_s(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (from 1): doubling, capped, jittered."""
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    def gives_up(self, error: BaseException, spent: int) -> bool:
        """Whether to dead-letter after ``error``, with ``spent`` attempts counted against the record."""
        return isinstance(error, PermanentError) or spent >= self.max_attempts


DeadLetter = Callable[[ConsumerRecord, OwnedPartition, Failure], Awaitable[None]]


class RetryingRunner:
    """Runs one record to an outcome: done, skipped, or dead-lettered once the policy gives up."""

    def __init__(
        self, handler: RecordHandler, policy: RetryPolicy, dead_letter: DeadLetter, metrics: WorkerMetrics
    ) -> None:
        self._handler = handler
        self._policy = policy
        self._dead_letter = dead_letter
        self._metrics = metrics

    async def run(self, record: ConsumerRecord, partition: OwnedPartition) -> None:
        """Raises :class:`consumer.partitions.Abandoned` if the partition is let go while the record waits.

        Every line logged meanwhile (the handler's, a retry's, the dead letter's) names the record in its own
        fields (:mod:`core.log_context`).
        """
        with (
            log_context.about(log_fields(record)),
            tracing.consuming(record.topic, record.partition, record.offset, record.key, record.headers),
        ):
            await self._run(record, partition)

    async def _run(self, record: ConsumerRecord, partition: OwnedPartition) -> None:
        started = time.monotonic()
        first_failure_at = None
        attempt = spent = 0
        while True:
            attempt += 1
            try:
                outcome = await self._handler.handle(record, attempt)
                break
            except Exception as exc:  # classified by the policy; anything unforeseen is retried like a transient
                failed_at = utc_now()
                first_failure_at = first_failure_at or failed_at
                spent += not isinstance(exc, DependencyUnavailable)
                if self._policy.gives_up(exc, spent):
                    tracing.fail(f"dead-lettered after {attempt} attempt(s): {type(exc).__name__}")
                    await self._dead_letter(record, partition, Failure(exc, attempt, first_failure_at, failed_at))
                    outcome = Outcome.DEAD_LETTERED
                    break
                delay_s = self._policy.delay_s(attempt)
                logger.warning(
                    "attempt %d of record %s failed (%s: %s); retrying in %.2f s",
                    attempt,
                    coordinates(record),
                    type(exc).__name__,
                    exc,
                    delay_s,
                    exc_info=not isinstance(exc, JobError),  # an unforeseen error deserves its traceback
                )
                self._metrics.retries.inc()
                await partition.sleep(delay_s)
        tracing.annotate({"image.outcome": str(outcome), "image.attempts": attempt})
        self._metrics.record_finished(outcome, time.monotonic() - started)


async def until_done(
    operation: Callable[[], Awaitable[None]],
    retry_on: tuple[type[Exception], ...],
    *,
    policy: RetryPolicy,
    partition: OwnedPartition,
    on_retry: Callable[[Exception, float], None],
) -> None:
    """Run ``operation`` until it succeeds, backing off with jitter after each error in ``retry_on``.

    ``on_retry`` is told each error and the delay. Raises :class:`consumer.partitions.Abandoned` once the
    partition is let go; other errors propagate.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            await operation()
        except retry_on as exc:
            delay_s = policy.delay_s(attempt)
            on_retry(exc, delay_s)
            await partition.sleep(delay_s)
        else:
            return
