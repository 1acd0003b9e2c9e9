"""The job store: what clients poll, what the API records on accept and the workers update.

The API writes a job once its event committed; a worker that got there first keeps its status, and the API's
late ``queued`` only fills in how the job was requested. A worker inserts the event's id into
``processed_events`` in the transaction that marks the job done (Kafka's "store progress in the same place as
the output"): a redelivered event is skipped, and of two workers racing on one event exactly one wins.

A finished job expires (:mod:`core.retention`): first its files, then its row, which leaves a tombstone. A worker
never starts an expired job again: a replayed event of one is skipped, as a cancelled job's is.

A client may cancel a job no worker has started. The database decides the race between the two: the cancel
applies only ``WHERE status = 'queued'`` and a worker's start never applies to a cancelled job, so exactly one wins.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, bindparam, exists, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import UpdateBase

from core.database import create_engine
from core.job_listing import (
    MAX_PAGE_SIZE,
    bucket_range,
    bucket_start,
    decode_cursor,
    encode_cursor,
    finished_statement,
    page_statement,
    status_counts_statement,
)
from core.job_listing import FinishedBucket as FinishedBucket  # re-exported: callers of JobStore use them
from core.job_listing import JobPage as JobPage
from core.job_listing import JobQuery as JobQuery
from core.job_listing import MalformedCursor as MalformedCursor
from core.sqlite_lane import CompiledRead, CompiledWrite, SqliteLane, is_sqlite_file
from core.tables import expired_jobs_table, jobs_table, processed_events_table
from schemas import BlobSource, DecodedEvent, ImageProcessV2, ImageProcessV3, UrlSource

# What the API writes over a row a worker created first: how the job was requested.
_REQUEST_COLUMNS = (
    "filter",
    "source_url",
    "blob_key",
    "request_fingerprint",
    "requested_at",
    "owner",
    "callback_url",
)
# What a worker writes about a job, per state. request_fingerprint and the request's description are the API's.
# The Kafka coordinates are the record it last started from: a redelivery or a redrive replaces them.
_PROCESSING_COLUMNS = (
    "status",
    "updated_at",
    "started_at",
    "finished_at",
    "attempts",
    "executions",
    "error",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)
_DONE_COLUMNS = ("status", "updated_at", "finished_at", "attempts", "error", "result_key")
_FAILED_COLUMNS = ("status", "updated_at", "finished_at", "attempts", "error")


class JobStatus(StrEnum):
    """Where a job is: accepted and waiting, being worked on, finished, given up on, or cancelled while queued."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Job:
    """One image job as stored. Exactly one of ``source_url`` and ``blob_key`` is set."""

    image_id: str
    status: JobStatus
    filter: str
    source_url: str | None
    blob_key: str | None
    request_fingerprint: str | None
    requested_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    attempts: int = 0
    executions: int = 0
    error: str | None = None
    result_key: str | None = None
    owner: str | None = None
    # Where the record a worker last started the job from sits; its key is the image id.
    kafka_topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None
    # When the retention sweep deleted the job's files (RESULT_TTL); None while they are kept.
    files_expired_at: dt.datetime | None = None
    callback_url: str | None = None  # POSTed a signed callback once the job is done or failed

    @classmethod
    def from_event(
        cls,
        event: DecodedEvent,
        status: JobStatus,
        *,
        now: dt.datetime,
        attempts: int = 0,
    ) -> Job:
        """The job an event describes, with its request's fingerprint where the event carries one."""
        source = event.source
        return cls(
            image_id=str(event.image_id),
            status=status,
            filter=event.filter.value,
            source_url=str(source.url) if isinstance(source, UrlSource) else None,
            blob_key=source.key if isinstance(source, BlobSource) else None,
            request_fingerprint=event.request_fingerprint if isinstance(event, ImageProcessV2) else None,
            owner=event.owner if isinstance(event, ImageProcessV2) else None,
            callback_url=_callback_url(event),
            requested_at=event.requested_at,
            updated_at=now,
            attempts=attempts,
        )


def _callback_url(event: DecodedEvent) -> str | None:
    if isinstance(event, ImageProcessV3) and event.callback_url is not None:
        return str(event.callback_url)
    return None


def utc_now() -> dt.datetime:
    """The current time, timezone-aware, as stored in every timestamp column."""
    return dt.datetime.now(dt.UTC)


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite keeps no zone: values come back naive, and they were written in UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Started:
    """A job a worker may go on with; ``executions`` counts this run (1 on the first)."""

    executions: int


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A job cancelled before any worker started it: the worker skips it, and :meth:`JobStore.mark_processing`
    changed nothing."""


@dataclass(frozen=True, slots=True)
class Expired:
    """A job past its retention (its files or its row expired): the worker skips it, and
    :meth:`JobStore.mark_processing` changed nothing."""


class JobStore:
    """Reads and writes jobs in the database named by ``DATABASE_URL``; its schema comes from ``image-migrate``
    (:mod:`core.schema`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._writes = _Writes.for_dialect(engine.dialect.name)
        # The API's batched statements (rows of accepted jobs, Idempotency-Key look-ups) on SQLite go through a
        # lane of their own; asyncpg already does a statement in one round trip.
        self._lane = SqliteLane(engine.url.database or "") if is_sqlite_file(engine.url) else None

    @classmethod
    def from_url(cls, database_url: str) -> JobStore:
        return cls(create_engine(database_url))

    async def close(self) -> None:
        if self._lane is not None:
            await self._lane.close()
        await self.engine.dispose()

    async def ping(self) -> None:
        """Raise if the database does not answer a trivial query."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def record_accepted(self, *jobs: Job) -> None:
        """Insert ``jobs`` as accepted, in one transaction; where a worker got there first, keep its status and
        add what it lacks."""
        if not jobs:
            return
        values = [_job_values(job) for job in jobs]
        if self._lane is not None:
            rows = [_SQLITE_RECORD_ACCEPTED.parameters(value) for value in values]
            await self._lane.run(lambda connection: connection.executemany(_SQLITE_RECORD_ACCEPTED.sql, rows))
            return
        async with self.engine.begin() as connection:
            await connection.execute(self._writes.record_accepted, values)

    async def is_processed(self, event_id: str) -> bool:
        """Whether the work of event ``event_id`` is done (its processed-id row exists)."""
        async with self.engine.connect() as connection:
            return (await connection.execute(_IS_PROCESSED, {"event_id": event_id})).first() is not None

    async def mark_processing(self, job: Job, *, event_id: str) -> Started | Cancelled | Expired | None:
        """Record that a worker started ``job`` for event ``event_id`` (status processing, attempts, started_at)
        and count the execution.

        Returns None, changing nothing, when the event is already processed (a redelivery to skip); the check and
        the write share one transaction. The row is inserted if the API has not written it yet. A done job is left
        alone (``executions`` 0): a duplicate racing with the winner must not turn it back into processing. A
        cancelled job is left alone too, and :class:`Cancelled` says so: the worker must not run it. So is an
        expired one (:class:`Expired`): its files are gone, or its row is and only a tombstone is left, which an
        insert here would bring back.
        """
        _expect_status(job, JobStatus.PROCESSING)
        async with self.engine.begin() as connection:
            # One round trip for both checks: this runs for every record a worker takes.
            ids = {"event_id": event_id, "image_id": job.image_id}
            processed, expired = (await connection.execute(_PROCESSED_OR_EXPIRED, ids)).one()
            if processed:
                return None
            if expired:
                return Expired()
            first_run = _job_values(job) | {"executions": 1}  # the insert's; an existing row counts one up
            row = (await connection.execute(self._writes.mark_processing, first_run)).first()
            if row is None:  # the row is final (done, cancelled or expired), so it cannot change under this read
                status, files_expired_at = (await connection.execute(_STATUS, {"image_id": job.image_id})).one()
                if files_expired_at is not None:
                    return Expired()
                if status == JobStatus.CANCELLED.value:
                    return Cancelled()
        return Started(executions=0 if row is None else int(row[0]))

    async def cancel(self, image_id: str) -> Job | None:
        """Cancel the job if it is still queued; returns it as it then is (cancelled now or before, or in the
        status that kept it from being cancelled), or None when there is no such row (yet).

        One statement decides: it applies only ``WHERE status = 'queued'``. A worker that started the job first
        makes it processing, which this leaves alone; one that comes later finds it cancelled and skips it.
        """
        now = utc_now()
        cancel = (
            update(jobs_table)
            .where(jobs_table.c.image_id == image_id, jobs_table.c.status == JobStatus.QUEUED.value)
            .values(status=JobStatus.CANCELLED.value, updated_at=now, finished_at=now)
            .returning(*jobs_table.c)
        )
        async with self.engine.begin() as connection:
            row = (await connection.execute(cancel)).mappings().first()
            if row is None:
                row = (await connection.execute(_GET, {"image_id": image_id})).mappings().first()
        return None if row is None else _job_from_row(row)

    async def complete(self, job: Job, *, event_id: str) -> bool:
        """In one transaction, record event ``event_id`` as processed and save ``job`` (status done).

        Returns False, changing nothing, when the event was already recorded: a concurrent duplicate won, and the
        job stays as the winner wrote it.
        """
        _expect_status(job, JobStatus.DONE)
        processed = {"event_id": event_id, "image_id": job.image_id, "processed_at": job.updated_at}
        async with self.engine.begin() as connection:
            if (await connection.execute(self._writes.record_processed, processed)).first() is None:
                return False
            await connection.execute(self._writes.mark_done, _job_values(job))
        return True

    async def mark_failed(self, job: Job) -> None:
        """Record that ``job`` was given up on (status failed, error, attempts, finished_at); no processed-id row.

        Without that row a later redrive of the same event runs again. A job that is already done (by a duplicate
        of the event that succeeded) or cancelled is left alone.
        """
        _expect_status(job, JobStatus.FAILED)
        async with self.engine.begin() as connection:
            await connection.execute(self._writes.mark_failed, _job_values(job))

    async def get(self, image_id: str) -> Job | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(_GET, {"image_id": image_id})).mappings().first()
        return None if row is None else _job_from_row(row)

    async def get_each(self, image_ids: list[str]) -> list[Job | None]:
        """The job of each id, in order (None where there is none), read with one statement."""
        rows: Sequence[Mapping[Any, Any]]
        if self._lane is not None:
            rows = await self._lane.run(lambda connection: _SQLITE_GET_EACH.execute(connection, image_ids))
        else:
            async with self.engine.connect() as connection:
                rows = (await connection.execute(_GET_EACH, {"image_ids": image_ids})).mappings().all()
        found = {row["image_id"]: _job_from_row(row) for row in rows}
        return [found.get(image_id) for image_id in image_ids]

    async def list_jobs(self, query: JobQuery, *, cursor: str | None = None, limit: int = 20) -> JobPage:
        """A page of up to ``limit`` (1 to 100) jobs matching ``query``, newest first, after the page whose
        ``next_cursor`` is ``cursor`` (None: the first page); see :mod:`core.job_listing`.

        Raises :class:`MalformedCursor` for a cursor no page handed out.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1 to {MAX_PAGE_SIZE}, not {limit}")
        after = None if cursor is None else decode_cursor(cursor)
        async with self.engine.connect() as connection:
            # One row more than the page: whether there is a next page, without a page that turns out empty.
            rows = (await connection.execute(page_statement(query, after, limit + 1))).mappings().all()
        jobs = tuple(_job_from_row(row) for row in rows[:limit])
        last = jobs[-1] if len(rows) > limit else None
        return JobPage(jobs, None if last is None else encode_cursor(last.requested_at, last.image_id))

    async def status_counts(self, owner: str | None = None) -> dict[JobStatus, int]:
        """How many jobs are in each status (every status present, 0 if none), of ``owner``'s jobs or everyone's."""
        async with self.engine.connect() as connection:
            rows = (await connection.execute(status_counts_statement(owner))).all()
        counts = dict.fromkeys(JobStatus, 0)
        counts.update({JobStatus(status): int(count) for status, count in rows})
        return counts

    async def finished_counts(
        self, since: dt.datetime, bucket_s: int, *, until: dt.datetime | None = None
    ) -> list[FinishedBucket]:
        """Jobs finished done and failed per ``bucket_s`` seconds, oldest bucket first, every bucket present.

        Buckets start at whole multiples of ``bucket_s`` since 1970 (the same on every call, so a chart polled
        again lines up), from the one holding ``since`` to the one holding ``until`` (default now): the first is
        counted whole. Raises ValueError for more than 10,000 buckets.
        """
        numbers = bucket_range(since, until or utc_now(), bucket_s)
        start = bucket_start(numbers.start, bucket_s)
        statement = finished_statement(self.engine.dialect.name, start, bucket_s)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        counts = {(int(bucket), status): int(count) for bucket, status, count in rows}
        return [
            FinishedBucket(
                start=bucket_start(number, bucket_s),
                done=counts.get((number, JobStatus.DONE.value), 0),
                failed=counts.get((number, JobStatus.FAILED.value), 0),
            )
            for number in numbers
        ]


_GET = select(jobs_table).where(jobs_table.c.image_id == bindparam("image_id"))
_GET_EACH = select(jobs_table).where(jobs_table.c.image_id.in_(bindparam("image_ids", expanding=True)))
_IS_PROCESSED = select(processed_events_table.c.event_id).where(
    processed_events_table.c.event_id == bindparam("event_id")
)
_STATUS = select(jobs_table.c.status, jobs_table.c.files_expired_at).where(
    jobs_table.c.image_id == bindparam("image_id")
)
_PROCESSED_OR_EXPIRED = select(
    exists().where(processed_events_table.c.event_id == bindparam("event_id")),
    exists().where(expired_jobs_table.c.image_id == bindparam("image_id")),
)


@dataclass(frozen=True, slots=True)
class _Writes:
    """The store's upserts, built once per dialect and executed with a row of values each time.

    Building an ``ON CONFLICT`` statement costs more CPU than SQLAlchemy's cached execution of it: rebuilding
    them on every call took about a fifth of a worker's time on small images.
    """

    record_accepted: UpdateBase  # the API's row; a worker's status, if already there, is kept
    mark_processing: UpdateBase  # never turns a done, cancelled or expired job back
    mark_done: UpdateBase
    mark_failed: UpdateBase  # never turns a done, cancelled or expired job back
    record_processed: UpdateBase  # returns the event id, or nothing when it was already recorded

    @classmethod
    def for_dialect(cls, dialect: str) -> _Writes:
        def upsert(columns: tuple[str, ...], where: ColumnElement[bool] | None) -> postgresql.Insert | sqlite.Insert:
            insert = _dialect_insert(dialect, jobs_table)
            set_: dict[str, Any] = {column: insert.excluded[column] for column in columns}
            if "executions" in columns:
                set_["executions"] = jobs_table.c.executions + 1
            return insert.on_conflict_do_update(index_elements=["image_id"], set_=set_, where=where)

        not_final = and_(
            jobs_table.c.status != JobStatus.DONE.value,
            jobs_table.c.status != JobStatus.CANCELLED.value,
            jobs_table.c.files_expired_at.is_(None),
        )
        processed = _dialect_insert(dialect, processed_events_table).on_conflict_do_nothing(index_elements=["event_id"])
        return cls(
            record_accepted=upsert(_REQUEST_COLUMNS, jobs_table.c.request_fingerprint.is_(None)),
            mark_processing=upsert(_PROCESSING_COLUMNS, not_final).returning(jobs_table.c.executions),
            mark_done=upsert(_DONE_COLUMNS, None),
            mark_failed=upsert(_FAILED_COLUMNS, not_final),
            record_processed=processed.returning(processed_events_table.c.event_id),
        )


def _dialect_insert(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with ``on_conflict_do_*``, which PostgreSQL and SQLite spell the same way in SQLAlchemy."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# The API's batched statements on SQLite, for its lane (core.sqlite_lane): compiled once, run on sqlite3 directly.
_SQLITE_RECORD_ACCEPTED = CompiledWrite(_Writes.for_dialect("sqlite").record_accepted, jobs_table)
_SQLITE_GET_EACH = CompiledRead(jobs_table, "image_id")


def _expect_status(job: Job, status: JobStatus) -> None:
    if job.status is not status:
        raise ValueError(f"expected a {status.value} job, got {job.status.value}")


def _job_values(job: Job) -> dict[str, Any]:
    return {
        "image_id": job.image_id,
        "status": job.status.value,
        "filter": job.filter,
        "source_url": job.source_url,
        "blob_key": job.blob_key,
        "request_fingerprint": job.request_fingerprint,
        "requested_at": job.requested_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
        "executions": job.executions,
        "error": job.error,
        "result_key": job.result_key,
        "owner": job.owner,
        "kafka_topic": job.kafka_topic,
        "kafka_partition": job.kafka_partition,
        "kafka_offset": job.kafka_offset,
        "files_expired_at": job.files_expired_at,
        "callback_url": job.callback_url,
    }


def _job_from_row(row: Any) -> Job:
    requested_at = _as_utc(row["requested_at"])
    updated_at = _as_utc(row["updated_at"])
    assert requested_at is not None, "NOT NULL column"
    assert updated_at is not None, "NOT NULL column"
    return Job(
        image_id=row["image_id"],
        status=JobStatus(row["status"]),
        filter=row["filter"],
        source_url=row["source_url"],
        blob_key=row["blob_key"],
        request_fingerprint=row["request_fingerprint"],
        requested_at=requested_at,
        updated_at=updated_at,
        started_at=_as_utc(row["started_at"]),
        finished_at=_as_utc(row["finished_at"]),
        attempts=row["attempts"],
        executions=row["executions"],
        error=row["error"],
        result_key=row["result_key"],
        owner=row["owner"],
        kafka_topic=row["kafka_topic"],
        kafka_partition=row["kafka_partition"],
        kafka_offset=row["kafka_offset"],
        files_expired_at=_as_utc(row["files_expired_at"]),
        callback_url=row["callback_url"],
    )
