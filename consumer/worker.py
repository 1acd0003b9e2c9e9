"""The consumer-group member: polls records, hands them to key lanes, commits what is finished.

Delivery rules kept here (the others live with the code that keeps them: key order in :mod:`consumer.lanes`,
the committable offset in :mod:`consumer.offsets`, retry or dead-letter in :mod:`consumer.retry`, the DLQ write
in :mod:`consumer.dead_letters`, idempotency in :mod:`consumer.handler`):

- An offset is committed only once the record at it and every record before it in its partition are finished,
  and only for partitions this member still owns.
- At most ``worker_concurrency`` records run at once (:mod:`consumer.lanes`), and at most ``ADMIT_FACTOR`` times
  that many are admitted, running or queued behind their key; when the worker stays full for a second, fetching
  is paused, but polling goes on so the member stays in its group.
- On revocation and on shutdown no new record starts, running records get a bounded time to finish, finished
  offsets are committed, and only then is the partition let go. aiokafka does not call the revocation listener on
  ``stop()``; :meth:`Worker.run` does the same drain itself before stopping.
- The retention sweep (:mod:`consumer.retention`), when given, runs beside the poll loop as a task of its own: it
  starts with the worker and ends with it, and only awaits the database and the blob store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumer.dead_letters import DeadLetterQueue
from consumer.lanes import KeyLanes
from consumer.metrics import Liveness, WorkerMetrics
from consumer.partitions import OwnedPartition
from consumer.records import partition_name
from consumer.retention import RetentionSweeper
from consumer.retry import RecordHandler, RetryingRunner, RetryPolicy
from core.kafka_connection import kafka_connection
from core.logs import KAFKA_TROUBLE
from core.settings import Settings

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
# While all slots are busy nothing can be fetched: wait for a free slot, but poll at least this often so the
# member is never considered stuck (max_poll_interval_ms is enforced on the client).
PAUSED_POLL_INTERVAL_S = 1.0
# Records admitted per running slot: look-ahead past records queued behind their own key, so repeated keys leave
# the slots to other keys (60 keys x 10 events fill 32 slots), while memory stays small.
ADMIT_FACTOR = 8
COMMIT_EVERY_RECORDS = 200
LAG_UPDATE_INTERVAL_S = 1.0  # the lag gauge is scraped every few seconds; computing it per poll cost per record


class Worker:
    """One member of the consumer group ``settings.consumer_group`` on ``settings.images_topic``."""

    def __init__(
        self,
        settings: Settings,
        handler: RecordHandler,
        *,
        metrics: WorkerMetrics | None = None,
        worker_id: str | None = None,
        sweeper: RetentionSweeper | None = None,
        log: logging.Logger = logger,
    ) -> None:
        """``log`` names the engine in its lines (membership, commits): a process may run more than one."""
        self.settings = settings
        self._log = log
        self.metrics = metrics or WorkerMetrics()
        self.liveness = Liveness(settings.liveness_timeout_s)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._consumer: AIOKafkaConsumer  # made by run(): a client made is a client to close
        self._sweeper = sweeper
        policy = RetryPolicy.from_settings(settings)
        self._dead_letters = DeadLetterQueue(settings, handler, policy, worker_id=self.worker_id)
        runner = RetryingRunner(handler, policy, self._dead_letters.dead_letter, self.metrics)
        self._lanes = KeyLanes(runner.run, settings.worker_concurrency)
        self._admit_limit = ADMIT_FACTOR * settings.worker_concurrency
        self._owned: dict[TopicPartition, OwnedPartition] = {}
        self._paused = False
        self._finished_at_last_commit = 0
        self._last_commit = time.monotonic()
        self._stopping = asyncio.Event()
        self._release_lock = asyncio.Lock()
        # Resume fetching once an eighth of the room is free, not at every single record: admitting records in
        # small batches keeps the pause/resume and poll overhead per record low when the worker is saturated.
        self._resume_at_free_slots = max(1, self._admit_limit // 8)
        self._lag_updated_at = 0.0
        # Read when scraped, not set per record: the engine's own cost per record is what bounds a fast handler.
        self.metrics.in_flight.set_function(lambda: self._lanes.in_flight)
        # The liveness rule itself, so an alert fires on what /livez says, not only on a scrape that fails.
        self.metrics.alive.set_function(lambda: 0 if self.liveness.problems() else 1)

    def stop(self) -> None:
        """Ask :meth:`run` to finish running jobs, commit and leave the group."""
        self._stopping.set()
        self._lanes.slot_freed.set()

    async def run(self) -> None:
        """Consume (and sweep, with a sweeper) until :meth:`stop` is called."""
        sweeper = self._sweeper
        sweeping = asyncio.create_task(sweeper.run(), name="retention sweep") if sweeper is not None else None
        try:
            await self._consume()
        finally:
            if sweeper is not None and sweeping is not None:
                sweeper.stop()
                await sweeping
        self._log.info("worker %s stopped", self.worker_id)

    async def _consume(self) -> None:
        settings = self.settings
        try:
            await self._dead_letters.start()
            self._consumer = AIOKafkaConsumer(
                **kafka_connection(settings),
                group_id=settings.consumer_group,
                client_id=f"image-worker-{self.worker_id}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # Events of an API transaction that did not commit (its request was answered 503) are never seen.
                isolation_level="read_committed",
                # The revocation listener drains running jobs for up to shutdown_timeout_s: the group waits that long.
                rebalance_timeout_ms=int((settings.shutdown_timeout_s + 10) * 1000),
            )
            try:
                await self._consumer.start()
                self._consumer.subscribe([settings.images_topic], listener=_Rebalance(self))
                await self._poll_until_stopped()
            finally:
                await self._release(list(self._owned))
                await self._consumer.stop()  # leaves the group: the partitions move on at once
        finally:
            await self._dead_letters.stop()

    async def _poll_until_stopped(self) -> None:
        while not self._stopping.is_set():
            free_slots = self._admit_limit - self._lanes.in_flight
            if free_slots <= 0 and not self._paused and await self._slot_freed_within(PAUSED_POLL_INTERVAL_S):
                # Full, but a slot usually frees soon: fetching stays on meanwhile, so the records aiokafka
                # prefetched are there when it does. Pausing at every full moment emptied that pipeline.
                continue
            self._apply_back_pressure(free_slots)
            if self._paused and await self._slot_freed_within(PAUSED_POLL_INTERVAL_S):
                continue  # re-evaluate at once; a slot-less poll would fetch nothing
            batches = await self._consumer.getmany(
                timeout_ms=0 if self._paused else POLL_TIMEOUT_MS,
                max_records=max(1, min(free_slots, self.settings.worker_concurrency)),
            )
            self.liveness.polled()
            self.metrics.last_poll.set_to_current_time()
            for partition, records in batches.items():
                for record in records:
                    self._admit(partition, record)
            if (
                self._lanes.finished - self._finished_at_last_commit >= COMMIT_EVERY_RECORDS
                or time.monotonic() - self._last_commit >= self.settings.commit_interval_s
            ):
                await self._commit(list(self._owned))  # a copy: a rebalance may change it meanwhile
                self._lag_updated_at = 0.0  # a commit moves the lag: show it now
            self._update_lag()

    async def _slot_freed_within(self, timeout_s: float) -> bool:
        slot_freed = self._lanes.slot_freed
        slot_freed.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await slot_freed.wait()
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
        owned = self._owned.get(partition)
        if owned is None or owned.released:
            return  # fetched just before the partition was let go: its next owner reads it again
        self._lanes.admit(partition, owned, record)

    async def _commit(self, partitions: Iterable[TopicPartition]) -> None:
        offsets = {}
        for partition in partitions:
            owned = self._owned.get(partition)
            if owned is not None and not owned.released:
                # Every record fetched so far was admitted; the position is past them and any transaction marker.
                # (Not for a released partition: records fetched after its release were dropped, not run.)
                with contextlib.suppress(IllegalStateError):  # revoked meanwhile: its release commits it
                    owned.offsets.passed(await self._consumer.position(partition))
            committable = owned.offsets.committable() if owned is not None else None
            if committable is not None:
                offsets[partition] = committable
        self._last_commit = time.monotonic()
        self._finished_at_last_commit = self._lanes.finished
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The group is rebalancing or we were expelled: the partitions' next owner re-reads from the last
            # commit, and the processed-ids table makes that harmless.
            named = {partition_name(tp): o for tp, o in offsets.items()}
            self._log.warning("commit of %s failed: %r", named, exc, extra=KAFKA_TROUBLE)
            return
        for partition, offset in offsets.items():
            owned = self._owned.get(partition)
            if owned is not None:  # a release may have forgotten it while the commit was in flight
                owned.offsets.committed = offset
        self._log.debug("committed %s", {partition_name(tp): o for tp, o in offsets.items()})

    async def _release(self, partitions: list[TopicPartition]) -> None:
        """Start nothing new on ``partitions``, let running records finish (bounded), commit, forget them."""
        # Shutdown and a revocation can both release the same partitions at once: one at a time, and only once.
        async with self._release_lock:
            owned = [partition for partition in partitions if partition in self._owned]
            if not owned:
                return
            for partition in owned:
                self._owned[partition].release()
            await self._lanes.wait(owned, self.settings.shutdown_timeout_s)
            await self._commit(owned)
            for partition in owned:
                del self._owned[partition]
                self.metrics.consumer_lag.remove(partition.topic, str(partition.partition))

    async def _on_assigned(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            owned = self._owned[partition] = OwnedPartition()
            # The group's committed offset: lag is measured from it until this worker commits its own.
            owned.offsets.committed = await self._consumer.committed(partition)
        self._paused = False  # an assignment resets aiokafka's pause state; the loop re-applies it
        self.liveness.joined()
        self._log.info("assigned %s", sorted(partition_name(partition) for partition in partitions))

    async def _on_revoked(self, partitions: Iterable[TopicPartition]) -> None:
        self.liveness.left()
        owned = [partition for partition in partitions if partition in self._owned]
        self._log.info("revoked %s", sorted(partition_name(partition) for partition in owned))
        await self._release(owned)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_updated_at < LAG_UPDATE_INTERVAL_S:
            return
        self._lag_updated_at = now
        for partition, owned in self._owned.items():
            highwater = self._consumer.highwater(partition)
            if highwater is None:
                continue  # nothing fetched from this partition yet
            tracker = owned.offsets
            base = tracker.committed if tracker.committed is not None else tracker.committable()
            lag = highwater - base if base is not None else 0
            self.metrics.consumer_lag.labels(partition.topic, str(partition.partition)).set(max(lag, 0))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._worker._on_assigned(assigned)
