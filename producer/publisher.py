"""Appending events to Kafka from the request path, in transactions, so that a 503 is the truth.

A request is answered 202 once the transaction holding its event committed, and 503 when it will never commit;
workers read ``read_committed``, so the event of a 503 is never processed. How:

- Group commit: the requests waiting at one moment share one transaction. A few transactional producers take
  turns, so one transaction's round trips (and the broker's marker writes, which keep the next transaction of the
  same producer waiting, KAFKA-5477) overlap with the next one's.
- Deadline: a transaction is begun and filled within the earliest ``SEND_TIMEOUT_S`` deadline of its requests;
  past it, it is aborted and its requests are answered 503. Once the commit is sent, its outcome is awaited (at
  most the transaction timeout): no answer is given that the broker could contradict. Only if the broker vanishes
  during the commit itself is the outcome unknown; the answer is then 503 too, and a retry with the same
  ``Idempotency-Key`` finds the job if the commit went through.
- A producer that failed is dropped at once: its unsent batches are failed and its sender stopped, so nothing of
  it reaches Kafka later and nothing retries in the background (aiokafka issue #1101). Its replacement has the same
  transactional id, which aborts the old open transaction; without one, the broker aborts it after
  ``transaction_timeout_ms``. Meanwhile the API answers 503 at once for ``RETRY_AFTER_S``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from core.clients import one_line, stop_within
from core.kafka_connection import kafka_connection
from core.logs import KAFKA_TROUBLE
from core.settings import Settings
from core.topics import ensure_topics
from producer.metrics import ApiMetrics, Outcome

logger = logging.getLogger(__name__)

ProducerFactory = Callable[[Settings, str], AIOKafkaProducer]
T = TypeVar("T")

PRODUCERS = 3  # transactions in flight at once
MAX_EVENTS_PER_TRANSACTION = 500
DROP_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 30.0
# Transactional ids are <prefix><host>-<pid>-<n>: one per producer, so a restarted API fences its own leftovers;
# a broker with ACLs grants the API Write on this prefix.
TRANSACTIONAL_ID_PREFIX = "image-api-"
# How long past a request's deadline its answer may wait for the commit it is in (one coordinator round trip once
# the events are acked), rather than answering 503 for an event that may yet commit.
COMMIT_GRACE_S = 1.0


class BrokerUnavailable(Exception):
    """The event was not committed in time and never will be: nothing was accepted, the client should retry."""


class OutcomeUnknown(BrokerUnavailable):
    """The broker vanished while committing: the event may be committed. Answered 503 all the same; a retry with
    the same Idempotency-Key settles it. Whatever the event refers to must be kept."""


def transaction_timeout_ms(settings: Settings) -> int:
    """How long the broker keeps a transaction open before aborting it: what an API process killed mid-transaction
    can stall ``read_committed`` readers of its partitions (plus the broker's abort check interval)."""
    return max(1000, int(settings.send_timeout_s * 2000))


def transactional_producer(settings: Settings, transactional_id: str) -> AIOKafkaProducer:
    """A producer whose events become visible only when their transaction commits (``acks=all``, idempotent)."""
    return AIOKafkaProducer(
        **kafka_connection(settings),
        enable_idempotence=True,
        acks="all",
        transactional_id=transactional_id,
        transaction_timeout_ms=transaction_timeout_ms(settings),
        linger_ms=0,
        request_timeout_ms=max(1000, int(settings.send_timeout_s * 1000)),
        client_id=transactional_id,
    )


@dataclass(frozen=True, slots=True)
class Record:
    """One event to append: where, under which key, with which headers."""

    topic: str
    key: bytes
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(slots=True)
class _Request:
    # A request's records go into one transaction together, never split: they commit or fail as one.
    records: list[Record]
    deadline: float  # on the event loop's clock
    answer: asyncio.Future[None]


class EventPublisher:
    """Publishes events in shared transactions; :meth:`publish` returns once its event is committed."""

    def __init__(
        self,
        settings: Settings,
        producer_factory: ProducerFactory = transactional_producer,
        *,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or ApiMetrics()
        self._producer_factory = producer_factory
        self._id_prefix = f"{TRANSACTIONAL_ID_PREFIX}{socket.gethostname()}-{os.getpid()}"
        self._producers: list[AIOKafkaProducer | None] = [None] * PRODUCERS
        self._connecting: list[asyncio.Task[AIOKafkaProducer] | None] = [None] * PRODUCERS
        self._topic_ensured = False
        self._waiting: collections.deque[_Request] = collections.deque()
        self._wake = asyncio.Event()
        self._filling = asyncio.Lock()
        self._takers: list[asyncio.Task[None]] = []
        self._dropping: set[asyncio.Task[None]] = set()
        self._cooling_until = 0.0

    async def start(self) -> None:
        """Try to connect now so the first request is fast; a missing broker is only logged."""
        try:
            async with asyncio.timeout(self._settings.send_timeout_s):
                await asyncio.gather(*(self._connected(index) for index in range(PRODUCERS)))
        except (TimeoutError, KafkaError, OSError) as exc:
            logger.warning("Kafka not reachable at start-up (%s); will retry on first use", one_line(exc))

    async def stop(self) -> None:
        """Answer what waits with 503, stop taking, drop the producers (bounded)."""
        for taker in self._takers:
            taker.cancel()
        await asyncio.gather(*self._takers, return_exceptions=True)
        self._answer_all(self._waiting, BrokerUnavailable("the API is shutting down"))
        self._waiting.clear()
        connecting = [task for task in self._connecting if task is not None]
        for task in connecting:
            task.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        for index in range(PRODUCERS):
            self._drop(index)
        await asyncio.gather(*self._dropping)

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Append one record; return once its transaction committed, raise :class:`BrokerUnavailable` otherwise."""
        await self.publish_all([Record(topic, key, value, headers)])

    async def publish_all(self, records: Sequence[Record]) -> None:
        """Append ``records`` in one transaction (at most ``MAX_EVENTS_PER_TRANSACTION``): all of them commit, or
        :class:`BrokerUnavailable` is raised and none will."""
        if not 1 <= len(records) <= MAX_EVENTS_PER_TRANSACTION:
            raise ValueError(f"publish 1 to {MAX_EVENTS_PER_TRANSACTION} records at once, not {len(records)}")
        loop = asyncio.get_running_loop()
        now = loop.time()
        try:
            self._refuse_while_cooling_down(now)
        except BrokerUnavailable:
            self._metrics.published(Outcome.FAILED, 0.0)
            raise
        request = _Request(list(records), now + self._settings.send_timeout_s, loop.create_future())
        self._waiting.append(request)
        self._wake.set()
        if not self._takers:
            self._takers = [
                asyncio.create_task(self._take(index), name=f"publisher {index}") for index in range(PRODUCERS)
            ]
        # The takers answer by the deadline (plus a commit's outcome); this bound only guards against a bug.
        outcome = Outcome.FAILED
        try:
            async with asyncio.timeout(self._settings.send_timeout_s + COMMIT_GRACE_S + 1):
                await asyncio.shield(request.answer)
            outcome = Outcome.COMMITTED
        except TimeoutError:
            logger.error("an event was not answered by its transaction in time; answering 503")
            raise OutcomeUnknown("the event's transaction did not report its outcome") from None
        finally:
            self._metrics.published(outcome, loop.time() - now)

    async def check(self) -> None:
        """Raise unless the broker answers a metadata request that lists the main topic."""
        self._refuse_while_cooling_down(asyncio.get_running_loop().time())
        try:
            async with asyncio.timeout(self._settings.send_timeout_s):
                producer = await self._connected(0)
                cluster = await producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"Kafka not reachable: {one_line(exc)}") from exc
        if self._settings.images_topic not in cluster.topics():
            raise BrokerUnavailable(f"topic {self._settings.images_topic!r} does not exist")

    async def _take(self, index: int) -> None:
        """One producer's loop: take what waits, publish it in one transaction, answer it.

        One transaction is filled at a time (sent and acked); its commit overlaps the next one's filling. What
        arrives while one fills waits for the next: under load transactions grow instead of multiplying, and a
        transaction's fixed cost (three requests to the broker, about a millisecond of CPU here) is shared.
        """
        while True:
            await self._wake.wait()
            async with self._filling:
                batch = self._next_batch()
                if not batch:
                    continue
                producer = await self._transact(index, batch, self._fill(index, batch))
            if producer is not None:
                await self._transact(index, batch, self._commit(index, producer, batch))

    def _next_batch(self) -> list[_Request]:
        now = asyncio.get_running_loop().time()
        batch: list[_Request] = []
        late: list[_Request] = []
        events = 0
        while self._waiting and events + len(self._waiting[0].records) <= MAX_EVENTS_PER_TRANSACTION:
            request = self._waiting.popleft()
            if request.answer.done():
                continue  # the client went away before its event was sent: nothing to publish
            if request.deadline <= now:
                late.append(request)
            else:
                batch.append(request)
                events += len(request.records)
        if not self._waiting:
            self._wake.clear()
        self._answer_all(late, BrokerUnavailable("no producer was free within the deadline"))
        return batch

    async def _transact(self, index: int, batch: list[_Request], step: Coroutine[Any, Any, T]) -> T:
        try:
            return await step
        except asyncio.CancelledError:  # stopping: the producer is dropped, so nothing more commits
            self._answer_all(batch, OutcomeUnknown("the API stopped while publishing"))
            raise

    async def _fill(self, index: int, batch: list[_Request]) -> AIOKafkaProducer | None:
        """Begin a transaction and send the batch's events, acked by their replicas; None (answered) if not."""
        try:
            async with asyncio.timeout_at(_deadline(batch)):
                producer = await self._connected(index)
                await producer.begin_transaction()
                acks = []
                for record in (record for request in batch for record in request.records):
                    ack = await producer.send(
                        record.topic, value=record.value, key=record.key, headers=list(record.headers)
                    )
                    ack.add_done_callback(_retrieve)  # read below, or moot once the transaction is dropped
                    acks.append(ack)
                # Every event acked by its partition's replicas before the commit is sent: what remains after the
                # deadline is one round trip to the transaction coordinator. (wait, not gather: the futures are
                # aiokafka's, not ours to cancel.)
                await asyncio.wait(acks)
                for ack in acks:
                    if (error := ack.exception()) is not None:
                        raise error
        except (TimeoutError, KafkaError, OSError) as exc:
            # No commit was sent, so none will happen: the replacement's fencing (or the broker's timeout) aborts
            # the transaction with its events unseen.
            self._fail(index, batch, BrokerUnavailable(f"the transaction was not filled in time ({one_line(exc)})"))
            return None
        return producer

    async def _commit(self, index: int, producer: AIOKafkaProducer, batch: list[_Request]) -> None:
        """Commit the filled transaction and answer its requests (503 if its outcome is unknown)."""
        try:
            async with asyncio.timeout_at(max(_deadline(batch), asyncio.get_running_loop().time()) + COMMIT_GRACE_S):
                await producer.commit_transaction()
        except (TimeoutError, KafkaError, OSError) as exc:
            self._fail(index, batch, OutcomeUnknown(f"the commit's outcome is unknown ({one_line(exc)})"))
            return
        self._metrics.transaction_events.observe(sum(len(request.records) for request in batch))
        for request in batch:
            if not request.answer.done():
                request.answer.set_result(None)

    def _fail(self, index: int, batch: list[_Request], error: BrokerUnavailable) -> None:
        events = sum(len(request.records) for request in batch)
        logger.warning("%d event(s) answered 503: %s", events, error, extra=KAFKA_TROUBLE)
        self._answer_all(batch, error)
        self._cool_down()
        self._drop(index)

    def _cool_down(self) -> None:
        """After a failure, answer 503 at once for ``RETRY_AFTER_S``; the next publish after it tries afresh."""
        self._cooling_until = asyncio.get_running_loop().time() + self._settings.retry_after_s

    def _refuse_while_cooling_down(self, now: float) -> None:
        remaining_s = self._cooling_until - now
        if remaining_s > 0:
            raise BrokerUnavailable(f"Kafka failed moments ago; trying again in {remaining_s:.1f} s")

    async def _connected(self, index: int) -> AIOKafkaProducer:
        """Producer ``index``, started. The start runs as a task of its own, bounded by ``CONNECT_TIMEOUT_S``, not
        by the deadline of the request that asked for it: a first start registers the transactional id and may
        outlast one request (a fresh broker creates its transaction log), and cutting it short each time would
        have the next attempt fence this one, over and over."""
        producer = self._producers[index]
        if producer is not None:
            return producer
        connecting = self._connecting[index]
        if connecting is None or connecting.done():
            connecting = asyncio.create_task(self._connect(index), name=f"publisher {index} connecting")
            connecting.add_done_callback(_retrieve)
            self._connecting[index] = connecting
        return await asyncio.shield(connecting)

    async def _connect(self, index: int) -> AIOKafkaProducer:
        transactional_id = f"{self._id_prefix}-{index}"
        producer = self._producer_factory(self._settings, transactional_id)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await producer.start()  # with a transactional id: fences and aborts an earlier same-id producer
                if not self._topic_ensured:  # whichever producer connects first: each one may be the only one
                    await ensure_topics(self._settings, [self._settings.images_topic])
                    self._topic_ensured = True
        except BaseException:
            self._drop_producer(producer)
            raise
        self._producers[index] = producer
        logger.info("connected to Kafka at %s as %s", self._settings.kafka_bootstrap_servers, transactional_id)
        return producer

    def _drop(self, index: int) -> None:
        producer, self._producers[index] = self._producers[index], None
        if producer is not None:
            self._drop_producer(producer)

    def _drop_producer(self, producer: AIOKafkaProducer) -> None:
        # Fail what it still holds first: stop() would otherwise flush, which waits forever for an absent broker,
        # and its sender would go on retrying in the background.
        producer._message_accumulator.fail_all(KafkaTimeoutError("producer dropped"))
        task = asyncio.create_task(stop_within(producer, DROP_TIMEOUT_S))
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    @staticmethod
    def _answer_all(requests: Iterable[_Request], error: BrokerUnavailable) -> None:
        for request in requests:
            if not request.answer.done():
                request.answer.set_exception(error)
                request.answer.exception()  # retrieved: a client that left does not make it "never retrieved"


def _deadline(batch: list[_Request]) -> float:
    return min(request.deadline for request in batch)


def _retrieve(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
