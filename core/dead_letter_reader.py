"""Reading for the redrive (``image-replay redrive``, the admin API): dead letters, the progress group's commits,
and earlier redrives.

The redrive keeps two kinds of progress. The progress group's committed offset on each DLQ partition is the
first dead letter not yet redriven (everything before it was). Dead letters past it may have been redriven too
(the selection skipped an earlier one, or the run stopped between the broker's ack and the commit): those are
found again by their ``redrive.*`` headers on the main topic. The commit's metadata says where on the main topic
such redrives can start (:func:`encode_scan_from`), so that search reads only the main topic's recent tail.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from core.clients import running
from core.kafka_connection import kafka_connection
from core.settings import Settings
from core.times import parse_aware_datetime
from core.topics import topic_partitions
from schemas import (
    DEAD_LETTER_PREFIX,
    REDRIVE_PREFIX,
    DeadLetterHeader,
    RedriveHeader,
    dead_letter_error_code,
    last_header,
)

logger = logging.getLogger(__name__)

METADATA_VERSION = 1
FETCH_TIMEOUT_MS = 500
COORDINATOR_WAIT_S = 15.0


@dataclass(frozen=True, slots=True)
class MainPosition:
    """Where a redriven copy landed on the main topic."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Committed:
    """The progress group's commit on one DLQ partition; ``scan_from`` is None when the metadata is not ours
    (e.g. an operator reset the group): then the reset is authoritative and no earlier redrive is looked for."""

    offset: int
    scan_from: dict[int, int] | None


def encode_scan_from(scan_from: Mapping[int, int]) -> str:
    """Commit metadata: per main-topic partition, the offset from which unconfirmed redrives can be found."""
    return json.dumps({"v": METADATA_VERSION, "scan_from": {str(p): o for p, o in sorted(scan_from.items())}})


def decode_scan_from(metadata: str | None) -> dict[int, int] | None:
    try:
        document = json.loads(metadata or "")
        if document.get("v") != METADATA_VERSION:
            return None
        return {int(partition): int(offset) for partition, offset in document["scan_from"].items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def header(record: ConsumerRecord, name: str) -> bytes | None:
    """The last value of header ``name`` on ``record``."""
    return last_header(record.headers, name)


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters an operator asked for; filters combine with AND, values of one filter with OR.

    An error code matches :func:`schemas.dead_letter_error_code` (older dead letters' codes are derived from their
    class); an error class matches ``dlq.error.class`` in full or by its last dotted part (``HttpClientError``);
    image ids match the record key; ``since`` (inclusive) and ``until`` (exclusive) apply to :func:`failure_time`.
    """

    error_codes: tuple[str, ...] = ()
    error_classes: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def matches(self, record: ConsumerRecord) -> bool:
        if self.error_codes and error_code(record) not in self.error_codes:
            return False
        if self.error_classes:
            name = error_class(record)
            if not any(wanted in (name, name.rsplit(".", 1)[-1]) for wanted in self.error_classes):
                return False
        if self.image_ids and (record.key or b"").lower() not in {i.lower().encode() for i in self.image_ids}:
            return False
        if self.since is not None or self.until is not None:
            failed_at = failure_time(record)
            if self.since is not None and failed_at < self.since:
                return False
            if self.until is not None and failed_at >= self.until:
                return False
        return True


def error_code(record: ConsumerRecord) -> str:
    """The dead letter's stable error code (``dlq.error.code``, or derived from an older letter's class)."""
    return dead_letter_error_code(record.headers)


def error_class(record: ConsumerRecord) -> str:
    value = header(record, DeadLetterHeader.ERROR_CLASS)
    return value.decode(errors="replace") if value else ""


def redrive_count(record: ConsumerRecord) -> int:
    try:
        return int(header(record, RedriveHeader.COUNT) or b"0")
    except ValueError:
        return 0


def failure_time(record: ConsumerRecord) -> dt.datetime:
    """The dead letter's last failure (``dlq.last_failure_at``), else the DLQ record's timestamp."""
    value = header(record, DeadLetterHeader.LAST_FAILURE_AT)
    try:
        return parse_aware_datetime(value.decode(errors="replace")) if value else _record_time(record)
    except ValueError:
        return _record_time(record)


def _record_time(record: ConsumerRecord) -> dt.datetime:
    return dt.datetime.fromtimestamp(record.timestamp / 1000, dt.UTC)


def copy_headers(record: ConsumerRecord, group: str, dlq_topic: str) -> list[tuple[str, bytes]]:
    """The original headers (no ``dlq.*``, no earlier ``redrive.*``) and where this copy comes from."""
    kept = [(k, v) for k, v in record.headers if not k.startswith((DEAD_LETTER_PREFIX, REDRIVE_PREFIX))]
    return [
        *kept,
        (RedriveHeader.COUNT.value, str(redrive_count(record) + 1).encode()),
        (RedriveHeader.GROUP.value, group.encode()),
        (RedriveHeader.DLQ_TOPIC.value, dlq_topic.encode()),
        (RedriveHeader.DLQ_PARTITION.value, str(record.partition).encode()),
        (RedriveHeader.DLQ_OFFSET.value, str(record.offset).encode()),
        (RedriveHeader.AT.value, dt.datetime.now(dt.UTC).isoformat().encode()),
    ]


async def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, Committed]:
    """The group's commits on ``topic``, by partition (none for partitions never committed)."""
    async with running(AIOKafkaAdminClient(**kafka_connection(settings))) as admin:
        deadline_s = time.monotonic() + COORDINATOR_WAIT_S
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
                break
            except KafkaError as exc:
                # A fresh broker answers "coordinator not available" until __consumer_offsets is ready.
                if not exc.retriable or time.monotonic() >= deadline_s:
                    raise
                await asyncio.sleep(0.2)
    return {
        tp.partition: Committed(meta.offset, decode_scan_from(meta.metadata))
        for tp, meta in offsets.items()
        if tp.topic == topic and meta.offset >= 0
    }


async def read_range(
    consumer: AIOKafkaConsumer,
    start: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
    *,
    max_records: int,
    idle_timeout_s: float = 30.0,
) -> AsyncIterator[list[ConsumerRecord]]:
    """Batches of the records in ``[start, end)`` of each partition, each partition in offset order.

    ``consumer`` must have the partitions of ``start`` assigned (not subscribed). Raises TimeoutError when nothing
    arrives for ``idle_timeout_s`` although records are still expected.
    """
    wanted = {tp: offset for tp, offset in start.items() if offset < end[tp]}
    for tp, offset in wanted.items():
        consumer.seek(tp, offset)
    while wanted:
        batches: dict[TopicPartition, list[ConsumerRecord]] = {}
        async with asyncio.timeout(idle_timeout_s):
            while wanted and not batches:
                batches = await consumer.getmany(*wanted, timeout_ms=FETCH_TIMEOUT_MS, max_records=max_records)
                if not batches:
                    # The log may end in a gap (retention, transaction markers): the position says so.
                    for tp in list(wanted):
                        if await consumer.position(tp) >= end[tp]:
                            del wanted[tp]
        batch: list[ConsumerRecord] = []
        for tp, records in batches.items():
            batch.extend(record for record in records if record.offset < end[tp])
            if records and records[-1].offset + 1 >= end[tp]:
                wanted.pop(tp, None)
        if batch:
            yield batch


async def earlier_redrives(
    settings: Settings,
    main_topic: str,
    committed: Mapping[int, Committed],
    start: Mapping[TopicPartition, int],
    *,
    group: str,
    dlq_topic: str,
) -> dict[tuple[int, int], MainPosition]:
    """Copies of dead letters at or past ``start`` that this group already published, by their main-topic headers.

    Returns ``{(dlq partition, dlq offset): where the copy is}``. Reads the main topic from the offsets the
    commits' metadata recorded up to its end as of the call.
    """
    scan_froms = {p: c.scan_from for p, c in committed.items() if c.scan_from is not None}
    if not scan_froms:
        return {}
    # A main partition missing from some commit's metadata (added later) is read from its beginning.
    main_partitions = {m for scan_from in scan_froms.values() for m in scan_from}
    scan_from = {m: min(s.get(m, 0) for s in scan_froms.values()) for m in main_partitions}
    start_by_partition = {tp.partition: offset for tp, offset in start.items()}
    found = await _copies_on(settings, main_topic, scan_from, group=group, dlq_topic=dlq_topic)
    return {
        (partition, offset): copy
        for (partition, offset), copy in found.items()
        if partition in scan_froms and offset >= start_by_partition.get(partition, 0)
    }


async def _copies_on(
    settings: Settings, main_topic: str, scan_from: Mapping[int, int], *, group: str, dlq_topic: str
) -> dict[tuple[int, int], MainPosition]:
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings), enable_auto_commit=False, isolation_level="read_committed"
    )
    async with running(consumer):
        partitions = await topic_partitions(settings, main_topic)
        consumer.assign(partitions)
        beginning = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        for tp in partitions:
            if scan_from.get(tp.partition, 0) < beginning[tp]:
                logger.warning(
                    "%s lost records from offset %d on to retention: copies of dead letters redriven then cannot be "
                    "recognised and may be redriven again",
                    tp,
                    scan_from.get(tp.partition, 0),
                )
        start = {tp: max(scan_from.get(tp.partition, 0), beginning[tp]) for tp in partitions}
        found: dict[tuple[int, int], MainPosition] = {}
        wanted_group, wanted_dlq = group.encode(), dlq_topic.encode()
        async for batch in read_range(consumer, start, end, max_records=2000):
            for record in batch:
                if (
                    header(record, RedriveHeader.GROUP) != wanted_group
                    or header(record, RedriveHeader.DLQ_TOPIC) != wanted_dlq
                ):
                    continue
                try:
                    partition = int(header(record, RedriveHeader.DLQ_PARTITION) or b"")
                    offset = int(header(record, RedriveHeader.DLQ_OFFSET) or b"")
                except ValueError:
                    continue
                found.setdefault((partition, offset), MainPosition(record.partition, record.offset))
        return found
