"""What waits on the dead-letter topic, for the admin pages: counts by error code and the newest dead letters.

Read with a short-lived consumer that joins no group (``assign`` and ``seek``), so looking moves nobody's
offsets. Bounded twice: at most the last ``scan_limit`` records of each DLQ partition are read (the result says
when older ones were left out), and the whole read by a deadline. An empty or missing topic reads nothing.
"""

from __future__ import annotations

import datetime as dt
import heapq
import uuid
from collections import Counter

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import BaseModel, ConfigDict

from core.clients import kafka_deadline, running
from core.consumer_group import STOP_TIMEOUT_S, retrying, topic_partitions
from core.dead_letter_reader import error_class, failure_time, header, read_range, redrive_count
from core.dead_letter_reader import error_code as code_of
from core.kafka_connection import kafka_connection
from core.redrive import default_progress_group
from core.settings import Settings
from schemas import DeadLetterHeader, EventDecodeError, decode_event

SCAN_LIMIT_PER_PARTITION = 1000
OVERVIEW_TIMEOUT_S = 15.0
FETCH_RECORDS = 500


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeadLetterSummary(_Frozen):
    """One dead letter: where it is, why it failed, where it came from, and whether it was redriven."""

    dlq_partition: int
    dlq_offset: int
    error_code: str
    error_class: str | None
    error_message: str | None
    attempts: int | None
    failed_at: dt.datetime
    """``dlq.last_failure_at``, else when the dead letter was written."""
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    key: str | None
    image_id: uuid.UUID | None
    """From the value, when it decodes as an event."""
    event_id: uuid.UUID | None
    redrive_count: int
    """How often the record went round already (``redrive.count``)."""
    redriven: bool
    """The default progress group's committed offset is past it: a redrive re-published it."""


class DeadLetterPartition(_Frozen):
    """One DLQ partition's range, and how far the default progress group redrove it."""

    partition: int
    log_start_offset: int
    log_end_offset: int
    redriven_before: int | None
    """The progress group's committed offset: every dead letter before it was redriven (None: none yet)."""


class DeadLetterOverview(_Frozen):
    """Counts by stable error code over the records read, and the newest dead letters matching the filter."""

    topic: str
    progress_group: str
    counts: dict[str, int]
    """Dead letters read, by error code (``dlq.error.code``, derived from the class for older ones)."""
    scanned: int
    scan_limit_per_partition: int
    truncated: bool
    """Some partition holds more than ``scan_limit_per_partition`` dead letters: older ones are not counted."""
    partitions: list[DeadLetterPartition]
    error_code: str | None
    """The filter of ``dead_letters`` (None: every code)."""
    dead_letters: list[DeadLetterSummary]
    """The newest first (by ``failed_at``), at most the limit asked for."""
    read_at: dt.datetime


async def dead_letter_overview(
    settings: Settings,
    *,
    error_code: str | None = None,
    limit: int = 50,
    scan_limit: int = SCAN_LIMIT_PER_PARTITION,
    timeout_s: float = OVERVIEW_TIMEOUT_S,
) -> DeadLetterOverview:
    """Count the last ``scan_limit`` dead letters of each DLQ partition by error code and summarise the newest
    ``limit`` with ``error_code`` (all when None). Raises :class:`core.clients.KafkaUnavailable` when Kafka does
    not answer within ``timeout_s``."""
    topic, group = settings.dlq_topic, default_progress_group(settings)
    request_timeout_ms = int(timeout_s * 1000)
    admin = AIOKafkaAdminClient(**kafka_connection(settings), request_timeout_ms=request_timeout_ms)
    async with (
        kafka_deadline(settings, timeout_s, f"reading the dead letters of {topic}"),
        running(admin, stop_timeout_s=STOP_TIMEOUT_S),
    ):
        partitions = await retrying(lambda: topic_partitions(admin, topic))
        offsets = await retrying(lambda: admin.list_consumer_group_offsets(group))
        committed = {
            tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0
        }
        tally = _Tally(error_code, limit)
        log_start: dict[TopicPartition, int] = {}
        log_end: dict[TopicPartition, int] = {}
        start: dict[TopicPartition, int] = {}
        if partitions:  # else no consumer at all: see core.consumer_group.log_range
            consumer = AIOKafkaConsumer(
                **kafka_connection(settings),
                enable_auto_commit=False,
                request_timeout_ms=request_timeout_ms,
                isolation_level="read_committed",
            )
            async with running(consumer, stop_timeout_s=STOP_TIMEOUT_S):
                consumer.assign(partitions)
                log_start = await consumer.beginning_offsets(partitions)
                log_end = await consumer.end_offsets(partitions)
                start = {tp: max(log_start[tp], log_end[tp] - scan_limit) for tp in partitions}
                async for batch in read_range(
                    consumer, start, log_end, max_records=FETCH_RECORDS, idle_timeout_s=timeout_s
                ):
                    tally.add(batch)
    return DeadLetterOverview(
        topic=topic,
        progress_group=group,
        counts=dict(tally.counts.most_common()),
        scanned=tally.counts.total(),
        scan_limit_per_partition=scan_limit,
        truncated=any(start[tp] > log_start[tp] for tp in partitions),
        partitions=[
            DeadLetterPartition(
                partition=tp.partition,
                log_start_offset=log_start[tp],
                log_end_offset=log_end[tp],
                redriven_before=committed.get(tp.partition),
            )
            for tp in partitions
        ],
        error_code=error_code,
        dead_letters=[summary(record, committed) for record in tally.newest()],
        read_at=dt.datetime.now(dt.UTC),
    )


class _Tally:
    """Counts by error code, and the newest ``limit`` records with ``error_code`` (by when they last failed) in a
    min-heap, so memory stays bounded by ``limit`` whatever is scanned."""

    def __init__(self, error_code: str | None, limit: int) -> None:
        self.counts: Counter[str] = Counter()
        self._error_code = error_code
        self._limit = limit
        self._heap: list[tuple[tuple[float, int, int], ConsumerRecord]] = []

    def add(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            code = code_of(record)
            self.counts[code] += 1
            if self._error_code is not None and code != self._error_code:
                continue
            entry = ((failure_time(record).timestamp(), record.partition, record.offset), record)
            if len(self._heap) < self._limit:
                heapq.heappush(self._heap, entry)
            elif entry[0] > self._heap[0][0]:
                heapq.heapreplace(self._heap, entry)

    def newest(self) -> list[ConsumerRecord]:
        return [record for _, record in sorted(self._heap, key=lambda entry: entry[0], reverse=True)]


def summary(record: ConsumerRecord, committed: dict[int, int]) -> DeadLetterSummary:
    """``record``, a dead letter, as the admin pages list it; ``committed`` is the progress group's offsets."""
    image_id: uuid.UUID | None = None
    event_id: uuid.UUID | None = None
    try:
        event = decode_event(record.value)
        image_id, event_id = event.image_id, event.event_id
    except EventDecodeError:
        pass  # a dead letter for being undecodable: it has no ids to show
    return DeadLetterSummary(
        dlq_partition=record.partition,
        dlq_offset=record.offset,
        error_code=code_of(record),
        error_class=error_class(record) or None,
        error_message=_text(record, DeadLetterHeader.ERROR_MESSAGE),
        attempts=_number(record, DeadLetterHeader.ATTEMPTS),
        failed_at=failure_time(record),
        original_topic=_text(record, DeadLetterHeader.ORIGINAL_TOPIC),
        original_partition=_number(record, DeadLetterHeader.ORIGINAL_PARTITION),
        original_offset=_number(record, DeadLetterHeader.ORIGINAL_OFFSET),
        key=None if record.key is None else record.key.decode(errors="replace"),
        image_id=image_id,
        event_id=event_id,
        redrive_count=redrive_count(record),
        redriven=committed.get(record.partition, 0) > record.offset,
    )


def _text(record: ConsumerRecord, name: str) -> str | None:
    value = header(record, name)
    return None if value is None else value.decode(errors="replace")


def _number(record: ConsumerRecord, name: str) -> int | None:
    try:
        return int(header(record, name) or b"")
    except ValueError:
        return None
