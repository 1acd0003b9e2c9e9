"""Re-publishing dead letters to the main topic, at most once per progress group: ``image-replay redrive`` and
the admin API's ``POST /admin/dead-letters/redrive`` both run :func:`redrive`.

Each dead letter is redriven at most once per progress group (default ``<CONSUMER_GROUP>.redrive``), also across
interrupted runs. The group's committed offset on each DLQ partition is the first dead letter not yet redriven; it
moves only over a contiguous run of redriven ones. Dead letters that do not match the filters, or are over the
cap, are NOT consumed: a later redrive with other filters (or a higher cap) still finds them. Dead letters past the
committed offset that were redriven already are recognised by the ``redrive.*`` headers of their copies on the
main topic and skipped. Run one redrive per progress group at a time: two at once would each publish a copy.

Copies keep the original non-``dlq.*`` headers and carry ``redrive.count`` (incremented when the dead letter came
from an earlier redrive), ``redrive.group``, ``redrive.dlq.topic``, ``redrive.dlq.partition``,
``redrive.dlq.offset`` and ``redrive.at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from core import tracing
from core.clients import running
from core.dead_letter_reader import (
    DeadLetterFilter,
    MainPosition,
    committed_offsets,
    copy_headers,
    earlier_redrives,
    encode_scan_from,
    error_code,
    read_range,
    redrive_count,
)
from core.kafka_connection import kafka_connection
from core.settings import Settings
from core.topics import topic_partitions

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

Hook = Callable[[], Awaitable[None]]


def default_progress_group(settings: Settings) -> str:
    """The progress group a redrive uses unless told otherwise: ``<CONSUMER_GROUP>.redrive``."""
    return f"{settings.consumer_group}.redrive"


class Verdict(StrEnum):
    """What the redrive does with one dead letter."""

    REDRIVE = "redrive"
    OVER_CAP = "over_cap"
    FILTERED_OUT = "filtered_out"
    ALREADY_REDRIVEN = "already_redriven"


@dataclasses.dataclass(frozen=True, slots=True)
class RedriveOptions:
    """What to redrive; filters combine with AND, several values of one filter with OR."""

    execute: bool = False
    error_codes: tuple[str, ...] = ()
    error_classes: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int | None = None
    max_redrives: int = 3
    group: str | None = None
    batch_size: int = 500

    def progress_group(self, settings: Settings) -> str:
        return self.group or default_progress_group(settings)


@dataclasses.dataclass
class Report:
    """Counts of one run, by error code, and the progress group's offsets afterwards."""

    dry_run: bool
    group: str
    examined: int = 0
    by_error_code: dict[str, Counter[Verdict]] = dataclasses.field(default_factory=dict)
    committed: dict[int, int] = dataclasses.field(default_factory=dict)

    def count(self, error_code: str, verdict: Verdict) -> None:
        self.examined += 1
        self.by_error_code.setdefault(error_code, Counter())[verdict] += 1

    def total(self, verdict: Verdict) -> int:
        return sum(counts[verdict] for counts in self.by_error_code.values())

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: what ``image-replay redrive --json`` prints and the admin API answers."""
        return {
            "dry_run": self.dry_run,
            "group": self.group,
            "examined": self.examined,
            "totals": {verdict.value: self.total(verdict) for verdict in Verdict},
            "by_error_code": {
                name: {verdict.value: counts[verdict] for verdict in Verdict}
                for name, counts in sorted(self.by_error_code.items())
            },
            "committed": {str(partition): offset for partition, offset in sorted(self.committed.items())},
        }


class RedriveProgress(Protocol):
    """Where a run reports how far it got (the CLI draws a line on stderr; the API reports nothing)."""

    def update(self, examined: int, redriven: int) -> None: ...

    def close(self) -> None: ...


class _NoProgress:
    def update(self, examined: int, redriven: int) -> None:
        pass

    def close(self) -> None:
        pass


class _Selection:
    """Decides each dead letter's verdict: redriven already, filtered out, over the cap, or to redrive."""

    def __init__(self, options: RedriveOptions, earlier: dict[tuple[int, int], MainPosition]) -> None:
        self._filter = DeadLetterFilter(
            options.error_codes, options.error_classes, options.image_ids, options.since, options.until
        )
        self._max_redrives = options.max_redrives
        self._earlier = earlier

    def verdict(self, record: ConsumerRecord) -> Verdict:
        if (record.partition, record.offset) in self._earlier:
            return Verdict.ALREADY_REDRIVEN
        if not self._filter.matches(record):
            return Verdict.FILTERED_OUT
        if redrive_count(record) >= self._max_redrives:
            return Verdict.OVER_CAP
        return Verdict.REDRIVE


async def redrive(
    settings: Settings,
    options: RedriveOptions,
    *,
    progress: Callable[[int], RedriveProgress] | None = None,
    between_ack_and_commit: Hook | None = None,
) -> Report:
    """Redrive the selected dead letters (only count them unless ``options.execute``).

    ``progress`` is called once with the number of dead letters to examine and told how far the run got.

    At most once, without transactions: aiokafka speaks the transaction APIs at v0 only, and the workers read
    the main topic read-uncommitted, so copies from an aborted transaction would be processed anyway. Instead,
    after each batch is acked the progress group commits the first offset not yet redriven, with metadata
    saying from which main-topic offsets copies past it can be found (:mod:`core.dead_letter_reader`). A run
    that dies between the ack and the commit (``between_ack_and_commit`` lets tests raise there) leaves copies
    past the committed offset; the next run reads the main topic from the recorded offsets, finds them by their
    ``redrive.*`` headers and skips their dead letters. Before publishing anything, a run commits that
    metadata once, so even the first batch is covered.
    """
    group = options.progress_group(settings)
    report = Report(dry_run=not options.execute, group=group)
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings),
        group_id=group if options.execute else None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    async with contextlib.AsyncExitStack() as clients:
        await clients.enter_async_context(running(consumer))
        dlq_partitions = await topic_partitions(settings, settings.dlq_topic)
        main_partitions = await topic_partitions(settings, settings.images_topic)
        consumer.assign(dlq_partitions)  # never subscribe: the group stays Empty, so the broker takes our commits
        committed = await committed_offsets(settings, group, settings.dlq_topic)
        beginning = await consumer.beginning_offsets(dlq_partitions)
        end = await consumer.end_offsets(dlq_partitions)
        start = {
            tp: max(committed[tp.partition].offset if tp.partition in committed else 0, beginning[tp])
            for tp in dlq_partitions
        }
        earlier = await earlier_redrives(
            settings, settings.images_topic, committed, start, group=group, dlq_topic=settings.dlq_topic
        )
        next_offset = {tp.partition: offset for tp, offset in start.items()}
        blocked: set[int] = set()  # partitions whose committable prefix ended at a dead letter left in place

        async def commit() -> None:
            main_end = await consumer.end_offsets(main_partitions)
            offsets = {}
            for tp in dlq_partitions:
                scan_from = {main.partition: offset for main, offset in main_end.items()}
                for (partition, offset), copy in earlier.items():
                    if partition == tp.partition and offset >= next_offset[partition]:
                        scan_from[copy.partition] = min(scan_from.get(copy.partition, 0), copy.offset)
                offsets[tp] = (next_offset[tp.partition], encode_scan_from(scan_from))
            await consumer.commit(offsets)
            report.committed = dict(next_offset)

        producer = None  # a dry run publishes nothing, so it opens no producer
        if options.execute:
            producer = AIOKafkaProducer(**kafka_connection(settings), enable_idempotence=True, acks="all")
            await clients.enter_async_context(running(producer, stop_timeout_s=STOP_TIMEOUT_S))
            await commit()  # covers the first batch: see the docstring
        selection = _Selection(options, earlier)
        to_examine = sum(max(0, end[tp] - start[tp]) for tp in dlq_partitions)
        shown = progress(to_examine) if progress is not None else _NoProgress()
        selected = 0
        try:
            async for batch in read_range(consumer, start, end, max_records=options.batch_size):
                outgoing: list[ConsumerRecord] = []
                for record in batch:
                    if options.limit is not None and selected >= options.limit:
                        break
                    verdict = selection.verdict(record)
                    report.count(error_code(record), verdict)
                    if verdict is Verdict.REDRIVE:
                        selected += 1
                        outgoing.append(record)
                    if verdict not in (Verdict.REDRIVE, Verdict.ALREADY_REDRIVEN):
                        blocked.add(record.partition)
                    elif record.partition not in blocked:
                        next_offset[record.partition] = record.offset + 1
                if producer is not None:
                    if outgoing:
                        earlier.update(await _publish(producer, outgoing, settings, group))
                        if between_ack_and_commit is not None:
                            await between_ack_and_commit()
                    await commit()
                shown.update(report.examined, selected)
                if options.limit is not None and selected >= options.limit:
                    break
        finally:
            shown.close()
        return report


async def _publish(
    producer: AIOKafkaProducer, records: list[ConsumerRecord], settings: Settings, group: str
) -> dict[tuple[int, int], MainPosition]:
    """Send ``records``' copies and wait for every ack; a failure leaves the batch uncommitted."""
    # The copies carry the redrive's trace context; its span links to the trace of each dead letter.
    links = tracing.links_to(record.headers for record in records)
    topic = settings.images_topic
    with tracing.producing(topic, count=len(records), links=links, name=f"redrive {topic}") as trace_headers:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            acks = [
                await producer.send(
                    topic,
                    key=record.key,
                    value=record.value,
                    headers=tracing.with_trace_headers(copy_headers(record, group, settings.dlq_topic), trace_headers),
                )
                for record in records
            ]
            landed = await asyncio.gather(*acks)
    for record, metadata in zip(records, landed, strict=True):
        logger.info(
            "redrove %s[%d]@%d (key=%r) to %s[%d]@%d",
            record.topic,
            record.partition,
            record.offset,
            record.key,
            metadata.topic,
            metadata.partition,
            metadata.offset,
        )
    return {
        (record.partition, record.offset): MainPosition(metadata.partition, metadata.offset)
        for record, metadata in zip(records, landed, strict=True)
    }
