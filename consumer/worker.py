"""The consumer-group member: fetches records, runs them with key-ordered concurrency, commits what is finished.

Delivery rules kept here:

- An offset is committed only once the record at it and every record before it in its partition are finished
  (done, skipped as a duplicate, or dead-lettered and acked by the DLQ topic): see :mod:`consumer.offsets`.
- Records with the same key run strictly one after another, in offset order; different keys run in parallel,
  also within one partition. At most ``worker_concurrency`` records are admitted at once; when all slots stay
  taken for a second, fetching is paused, but polling goes on so the member stays in its group.
- A transient failure is retried with exponential back-off and full jitter, holding up only its own key. A
  permanent failure, or the last failed attempt, goes to the DLQ; a DLQ write that fails keeps the record
  uncommitted and is tried again, so nothing is lost. An unavailable database or blob store spends no attempt:
  the record waits for it, and the job's ``failed`` status after a dead letter is retried the same way.
- On revocation and on shutdown no new record starts, retries are abandoned (left uncommitted, so the next
  owner runs them), running records get a bounded time to finish, finished offsets are committed, and only then
  is the partition let go. aiokafka does not call the revocation listener on ``stop()``; :meth:`Worker.run` does
  the same drain itself before stopping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumer.dead_letters import Failure, dead_letter_headers
from consumer.errors import DependencyUnavailable, JobError, PermanentError, TransientError
from consumer.metrics import Liveness, WorkerMetrics
from consumer.offsets import PartitionOffsets
from core.jobs import utc_now
from core.settings import Settings

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
# While all slots are busy nothing can be fetched: wait for a free slot, but poll at least this often so the
# member is never considered stuck (max_poll_interval_ms is enforced on the client).
PAUSED_POLL_INTERVAL_S = 1.0
COMMIT_EVERY_RECORDS = 200
DLQ_SEND_TIMEOUT_S = 10.0
LAG_UPDATE_INTERVAL_S = 1.0  # the lag gauge is scraped every few seconds; computing it per poll cost per record


class RecordHandler(Protocol):
    """What the worker runs for each record (see :class:`consumer.handler.JobHandler`)."""

    async def handle(self, record: ConsumerRecord, attempt: int) -> str:
        """Process one record; return the outcome's name, raise to fail the attempt."""
        ...

    async def record_failure(self, record: ConsumerRecord, error: BaseException, attempts: int) -> None:
        """Note a dead-lettered record (e.g. mark its job failed)."""
        ...


class _Abandoned(Exception):
    """The record's partition was let go (revoked or shutting down) before it finished: leave it uncommitted."""


Lane = tuple[TopicPartition, bytes | None]


class Worker:
    """One member of the consumer group ``settings.consumer_group`` on ``settings.images_topic``."""

    def __init__(
        self,
        settings: Settings,
        handler: RecordHandler,
        *,
        metrics: WorkerMetrics | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.metrics = metrics or WorkerMetrics()
        self.liveness = Liveness(settings.liveness_timeout_s)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group,
            client_id=f"image-worker-{self.worker_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # The revocation listener drains running jobs for up to shutdown_timeout_s: the group must wait that long.
            rebalance_timeout_ms=int((settings.shutdown_timeout_s + 10) * 1000),
        )
        self._dlq_producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            client_id=f"image-worker-dlq-{self.worker_id}",
        )
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._released: dict[TopicPartition, asyncio.Event] = {}
        self._lanes: dict[Lane, deque[ConsumerRecord]] = {}
        self._lane_tasks: dict[Lane, asyncio.Task[None]] = {}
        self._in_flight = 0
        self._paused = False
        self._finished_since_commit = 0
        self._last_commit = time.monotonic()
        self._stopping = asyncio.Event()
        self._release_lock = asyncio.Lock()
        self._slot_freed = asyncio.Event()
        # Resume fetching once an eighth of the slots are free, not at every single one: admitting records in
        # small batches keeps the pause/resume and poll overhead per record low when the worker is saturated.
        self._resume_at_free_slots = max(1, settings.worker_concurrency // 8)
        self._lag_updated_at = 0.0
        # Read when scraped, not set per record: the engine's own cost per record is what bounds a fast handler.
        self.metrics.in_flight.set_function(lambda: self._in_flight)

    def stop(self) -> None:
        """Ask :meth:`run` to finish running jobs, commit and leave the group."""
        self._stopping.set()
        self._slot_freed.set()

    async def run(self) -> None:
        """Consume until :meth:`stop` is called."""
        await self._dlq_producer.start()
        try:
            await self._consumer.start()
            try:
                self._consumer.subscribe([self.settings.images_topic], listener=_Rebalance(self))
                await self._poll_until_stopped()
            finally:
                await self._release(list(self._offsets))
                await self._consumer.stop()  # leaves the group: the partitions move on at once
        finally:
            try:
                async with asyncio.timeout(DLQ_SEND_TIMEOUT_S):
                    await self._dlq_producer.stop()
            except TimeoutError:
                logger.warning("DLQ producer did not stop within %s s", DLQ_SEND_TIMEOUT_S)
        logger.info("worker %s stopped", self.worker_id)

    async def _poll_until_stopped(self) -> None:
        while not self._stopping.is_set():
            free_slots = self.settings.worker_concurrency - self._in_flight
            if free_slots <= 0 and not self._paused and await self._slot_freed_within(PAUSED_POLL_INTERVAL_S):
                # Full, but a slot usually frees soon: fetching stays on meanwhile, so the records aiokafka
                # prefetched are there when it does. Pausing at every full moment emptied that pipeline.
                continue
            self._apply_back_pressure(free_slots)
            if self._paused and await self._slot_freed_within(PAUSED_POLL_INTERVAL_S):
                continue  # re-evaluate at once; a slot-less poll would fetch nothing
            batches = await self._consumer.getmany(
                timeout_ms=0 if self._paused else POLL_TIMEOUT_MS, max_records=max(free_slots, 1)
            )
            self.liveness.polled()
            self.metrics.last_poll.set_to_current_time()
            for partition, records in batches.items():
                for record in records:
                    self._admit(partition, record)
            if (
                self._finished_since_commit >= COMMIT_EVERY_RECORDS
                or time.monotonic() - self._last_commit >= self.settings.commit_interval_s
            ):
                await self._commit(self._offsets)
                self._lag_updated_at = 0.0  # a commit moves the lag: show it now
            self._update_lag()

    async def _slot_freed_within(self, timeout_s: float) -> bool:
        self._slot_freed.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._slot_freed.wait()
        except TimeoutError:
            return False
        return True

    def _apply_back_pressure(self, free_slots: int) -> None:
        if free_slots <= 0 and not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
        elif free_slots >= self._resume_at_free_slots and self._paused:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    def _admit(self, partition: TopicPartition, record: ConsumerRecord) -> None:
        offsets = self._offsets.get(partition)
        if offsets is None or self._released[partition].is_set():
            return  # fetched just before the partition was let go: its next owner reads it again
        offsets.started(record.offset)
        self._in_flight += 1
        lane: Lane = (partition, record.key)
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = deque()
            self._lane_tasks[lane] = asyncio.create_task(self._drain_lane(lane, queue), name=f"lane {lane}")
        queue.append(record)

    async def _drain_lane(self, lane: Lane, queue: deque[ConsumerRecord]) -> None:
        """Run one key's records in offset order; stop early (uncommitted) if the partition is let go."""
        partition = lane[0]
        try:
            while queue:
                record = queue[0]
                if self._released[partition].is_set():
                    raise _Abandoned
                await self._run_record(record)
                queue.popleft()
                self._offsets[partition].finished(record.offset)
                self._finished_since_commit += 1
                self._in_flight -= 1
                self._slot_freed.set()
        except _Abandoned:
            logger.info("left %d record(s) of %s uncommitted for the next owner", len(queue), _describe(partition))
        except asyncio.CancelledError:
            logger.warning("cancelled %d record(s) of %s; they stay uncommitted", len(queue), _describe(partition))
            raise
        finally:
            self._in_flight -= len(queue)
            self._slot_freed.set()
            queue.clear()
            del self._lanes[lane], self._lane_tasks[lane]

    async def _run_record(self, record: ConsumerRecord) -> None:
        started = time.monotonic()
        first_failure_at = None
        attempt = 0
        spent = 0  # failed attempts that count against max_attempts: an unavailable dependency is not the record's
        while True:
            attempt += 1
            try:
                outcome = await self.handler.handle(record, attempt)
            except Exception as exc:  # classified below; anything unforeseen is retried like a transient error
                failed_at = utc_now()
                first_failure_at = first_failure_at or failed_at
                spent += not isinstance(exc, DependencyUnavailable)
                if isinstance(exc, PermanentError) or spent >= self.settings.max_attempts:
                    await self._dead_letter(record, Failure(exc, attempt, first_failure_at, failed_at))
                    outcome = "dead_lettered"
                    break
                delay_s = self._backoff_s(attempt)
                logger.warning(
                    "attempt %d of %s failed (%s: %s); retrying in %.2f s",
                    attempt,
                    _describe_record(record),
                    type(exc).__name__,
                    exc,
                    delay_s,
                    exc_info=not isinstance(exc, JobError),  # an unforeseen error deserves its traceback
                )
                self.metrics.retries.inc()
                await self._pause_unless_released(record, delay_s)
            else:
                break
        self.metrics.record_finished(outcome, time.monotonic() - started)

    def _backoff_s(self, attempt: int) -> float:
        ceiling = min(self.settings.retry_backoff_max_s, self.settings.retry_backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    async def _pause_unless_released(self, record: ConsumerRecord, delay_s: float) -> None:
        released = self._released[TopicPartition(record.topic, record.partition)]
        try:
            async with asyncio.timeout(delay_s):
                await released.wait()
        except TimeoutError:
            return
        raise _Abandoned

    async def _dead_letter(self, record: ConsumerRecord, failure: Failure) -> None:
        """Publish ``record`` to the DLQ and wait for the ack, retrying until it is acked or let go."""
        headers = dead_letter_headers(
            record, failure, worker_id=self.worker_id, consumer_group=self.settings.consumer_group
        )

        async def send_and_wait_for_ack() -> None:
            async with asyncio.timeout(DLQ_SEND_TIMEOUT_S):
                ack = await self._dlq_producer.send(
                    self.settings.dlq_topic, key=record.key, value=record.value, headers=headers
                )
                await ack

        await self._until_done(
            record,
            send_and_wait_for_ack,
            (KafkaError, TimeoutError),
            "could not dead-letter %s (%r); it stays uncommitted, next try in %.2f s",
            logging.ERROR,
        )
        logger.error(
            "Processing %s failed after %d attempt(s): %s: %s; sent to %s",
            _describe_record(record),
            failure.attempts,
            type(failure.error).__name__,
            failure.error,
            self.settings.dlq_topic,
        )
        await self._record_failure(record, failure)

    async def _record_failure(self, record: ConsumerRecord, failure: Failure) -> None:
        """Mark the dead-lettered record's job failed, retrying while the database is unavailable.

        The dead letter is safe whatever happens here; only the job's status would not say so. The retries end
        when the partition is let go, and the next owner then runs the record (and dead-letters it) again.
        """
        try:
            await self._until_done(
                record,
                lambda: self.handler.record_failure(record, failure.error, failure.attempts),
                (TransientError,),
                "could not record the failure of %s (%s); next try in %.2f s",
                logging.WARNING,
            )
        except _Abandoned:
            raise
        except Exception:
            logger.exception("could not record the failure of %s", _describe_record(record))

    async def _until_done(
        self,
        record: ConsumerRecord,
        operation: Callable[[], Awaitable[None]],
        retry_on: tuple[type[Exception], ...],
        retry_message: str,
        level: int,
    ) -> None:
        """Run ``operation`` until it succeeds, backing off with jitter after each error in ``retry_on``.

        ``retry_message`` is logged with the record, the error and the delay. Raises ``_Abandoned`` once the
        record's partition is let go; other errors propagate.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                await operation()
            except retry_on as exc:
                delay_s = self._backoff_s(attempt)
                logger.log(level, retry_message, _describe_record(record), exc, delay_s)
                await self._pause_unless_released(record, delay_s)
            else:
                return

    async def _commit(self, partitions: Iterable[TopicPartition]) -> None:
        offsets = {}
        for partition in partitions:
            tracker = self._offsets.get(partition)
            committable = tracker.committable() if tracker is not None else None
            if committable is not None:
                offsets[partition] = committable
        self._last_commit = time.monotonic()
        self._finished_since_commit = 0
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The group is rebalancing or we were expelled: the partitions' next owner re-reads from the last
            # commit, and the processed-ids table makes that harmless.
            logger.warning("commit of %s failed: %r", {_describe(tp): o for tp, o in offsets.items()}, exc)
            return
        for partition, offset in offsets.items():
            tracker = self._offsets.get(partition)
            if tracker is not None:  # a release may have forgotten it while the commit was in flight
                tracker.committed = offset
        logger.debug("committed %s", {_describe(tp): o for tp, o in offsets.items()})

    async def _release(self, partitions: list[TopicPartition]) -> None:
        """Start nothing new on ``partitions``, let running records finish (bounded), commit, forget them."""
        # Shutdown and a revocation can both release the same partitions at once: one at a time, and only once.
        async with self._release_lock:
            await self._release_owned([partition for partition in partitions if partition in self._offsets])

    async def _release_owned(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        for partition in partitions:
            self._released[partition].set()
        lanes = [task for (partition, _), task in self._lane_tasks.items() if partition in partitions]
        if lanes:
            _, late = await asyncio.wait(lanes, timeout=self.settings.shutdown_timeout_s)
            for task in late:
                task.cancel()
            if late:
                logger.warning(
                    "%d job(s) outlived the %s s drain and were cancelled", len(late), self.settings.shutdown_timeout_s
                )
                await asyncio.wait(late)
        await self._commit(partitions)
        for partition in partitions:
            del self._offsets[partition], self._released[partition]
            self.metrics.consumer_lag.remove(partition.topic, str(partition.partition))

    async def _on_assigned(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            offsets = self._offsets[partition] = PartitionOffsets()
            # The group's committed offset: lag is measured from it until this worker commits its own.
            offsets.committed = await self._consumer.committed(partition)
            self._released[partition] = asyncio.Event()
        self._paused = False  # an assignment resets aiokafka's pause state; the loop re-applies it
        self.liveness.joined()
        logger.info("assigned %s", sorted(_describe(partition) for partition in partitions))

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_updated_at < LAG_UPDATE_INTERVAL_S:
            return
        self._lag_updated_at = now
        for partition, tracker in self._offsets.items():
            highwater = self._consumer.highwater(partition)
            if highwater is None:
                continue  # nothing fetched from this partition yet
            base = tracker.committed if tracker.committed is not None else tracker.committable()
            lag = highwater - base if base is not None else 0
            self.metrics.consumer_lag.labels(partition.topic, str(partition.partition)).set(max(lag, 0))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._worker.liveness.left()
        owned = [partition for partition in revoked if partition in self._worker._offsets]
        logger.info("revoked %s", sorted(_describe(partition) for partition in owned))
        await self._worker._release(owned)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._worker._on_assigned(assigned)


def _describe(partition: TopicPartition) -> str:
    return f"{partition.topic}[{partition.partition}]"


def _describe_record(record: ConsumerRecord) -> str:
    key = record.key.decode(errors="replace") if record.key is not None else None
    return f"record topic={record.topic} partition={record.partition} offset={record.offset} key={key}"
