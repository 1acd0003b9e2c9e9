"""Reading jobs in bulk for ``GET /images`` and the console: a filtered list a page at a time, and counts.

Pages are cut by keyset, never by OFFSET: the list is ordered newest first by ``(requested_at, image_id)`` and a
page starts below the last row of the one before. A page costs the same however deep it is (the index on those
two columns is entered at the cursor), and jobs accepted meanwhile neither repeat nor skip a row. The cursor is
that last row's ``requested_at`` and id, as URL-safe text clients pass back unchanged.

The statements are built here, the rows turned into jobs by :class:`core.jobs.JobStore`, which imports this module
(so this one imports it only for types).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import BigInteger, ColumnElement, Integer, Select, cast, extract, func, or_, select

from core.tables import jobs_table

if TYPE_CHECKING:
    from core.jobs import Job, JobStatus

MAX_PAGE_SIZE: Final = 100
MAX_BUCKETS: Final = 10_000  # a chart's worth; more would be one reply of megabytes

# ``<microseconds since 1970 UTC>.<image id as 32 hex digits>``: every string this pattern matches is a cursor
# (17 digits reach the year 5138), so the API can document it exactly and refuse anything else as a 422.
CURSOR_PATTERN: Final = r"^[0-9]{1,17}\.[0-9a-f]{32}$"
_CURSOR: Final = re.compile(CURSOR_PATTERN.removeprefix("^").removesuffix("$"))
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND: Final = dt.timedelta(microseconds=1)


class MalformedCursor(ValueError):
    """The cursor is not one a page of this list handed out (edited or cut short): start from the first page."""


@dataclass(frozen=True, slots=True)
class JobQuery:
    """Which jobs to list; every criterion left None (or empty) matches all."""

    status: JobStatus | None = None
    filter: str | None = None
    owner: str | None = None  # an API key's id; None lists every owner's jobs
    id_prefix: str | None = None  # the start of the image id, in any case
    requested_after: dt.datetime | None = None  # inclusive; a naive time is taken as UTC
    requested_before: dt.datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a listing, newest first; ``next_cursor`` is None on the last page."""

    jobs: tuple[Job, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class FinishedBucket:
    """How many jobs finished done and failed from ``start`` for the bucket's length."""

    start: dt.datetime
    done: int
    failed: int


def encode_cursor(requested_at: dt.datetime, image_id: str) -> str:
    """The cursor of the page after the row ``(requested_at, image_id)``."""
    micros = (_as_utc(requested_at) - _EPOCH) // _MICROSECOND
    return f"{micros}.{uuid.UUID(image_id).hex}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """The ``(requested_at, image_id)`` a cursor names; raises :class:`MalformedCursor`."""
    if _CURSOR.fullmatch(cursor) is None:
        raise MalformedCursor(f"not a cursor of this list: {cursor[:80]!r}")
    micros, hex_id = cursor.split(".")
    return _EPOCH + dt.timedelta(microseconds=int(micros)), str(uuid.UUID(hex_id))


def page_statement(query: JobQuery, after: tuple[dt.datetime, str] | None, rows: int) -> Select[Any]:
    """Up to ``rows`` jobs matching ``query``, newest first, below the row ``after`` (a decoded cursor)."""
    jobs = jobs_table.c
    where: list[ColumnElement[bool]] = []
    if query.status is not None:
        where.append(jobs.status == query.status.value)
    if query.filter:
        where.append(jobs.filter == query.filter)
    if query.owner is not None:
        where.append(jobs.owner == query.owner)
    if query.id_prefix:
        # Ids are lowercase; LIKE's own characters in the prefix are escaped, never wildcards.
        where.append(jobs.image_id.startswith(query.id_prefix.lower(), autoescape=True))
    if query.requested_after is not None:
        where.append(jobs.requested_at >= _as_utc(query.requested_after))
    if query.requested_before is not None:
        where.append(jobs.requested_at < _as_utc(query.requested_before))
    if after is not None:
        at, image_id = after
        # Not a row-value comparison: spelled so both databases enter the index on its first column, and only the
        # rows sharing the cursor's requested_at are compared by id.
        where += [jobs.requested_at <= at, or_(jobs.requested_at < at, jobs.image_id < image_id)]
    return select(jobs_table).where(*where).order_by(jobs.requested_at.desc(), jobs.image_id.desc()).limit(rows)


def status_counts_statement(owner: str | None) -> Select[str, int]:
    """``(status, count)`` rows, of ``owner``'s jobs or (None) everyone's."""
    statement = select(jobs_table.c.status, func.count()).group_by(jobs_table.c.status)
    return statement if owner is None else statement.where(jobs_table.c.owner == owner)


def finished_statement(dialect: str, start: dt.datetime, bucket_s: int) -> Select[int, str, int]:
    """``(bucket number since 1970, status, count)`` rows of the jobs finished since ``start``.

    Only final jobs have ``finished_at`` (a job started again loses it), so no status filter is needed; callers
    pick the statuses they chart from the rows.
    """
    finished_at = jobs_table.c.finished_at
    seconds: ColumnElement[int]
    if dialect == "postgresql":
        seconds = cast(func.floor(extract("epoch", finished_at)), BigInteger)
    else:  # SQLite keeps the UTC time as text, which strftime reads
        seconds = cast(func.strftime("%s", finished_at), Integer)
    bucket = (seconds // bucket_s).label("bucket")  # integer division on both databases
    return (
        select(bucket, jobs_table.c.status, func.count())
        .where(finished_at >= _as_utc(start))
        .group_by(bucket, jobs_table.c.status)
    )


def bucket_range(since: dt.datetime, until: dt.datetime, bucket_s: int) -> range:
    """The numbers (since 1970, in ``bucket_s`` steps) of the buckets from the one holding ``since`` to the one
    holding ``until``; raises ValueError past :data:`MAX_BUCKETS`."""
    if bucket_s < 1:
        raise ValueError(f"bucket_s must be at least 1 second, not {bucket_s}")
    first, last = (_epoch_s(since) // bucket_s, _epoch_s(until) // bucket_s)
    if last - first + 1 > MAX_BUCKETS:
        raise ValueError(f"{last - first + 1} buckets asked for, more than {MAX_BUCKETS}: use longer buckets")
    return range(first, last + 1)


def bucket_start(number: int, bucket_s: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=number * bucket_s)


def _epoch_s(moment: dt.datetime) -> int:
    return (_as_utc(moment) - _EPOCH) // dt.timedelta(seconds=1)


def _as_utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` in UTC (as every timestamp is stored; SQLite compares them as text); naive means UTC already.

    A bound at the very edge of the calendar that UTC cannot express is moved to that edge.
    """
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        if moment.year == dt.MINYEAR:
            return dt.datetime.min.replace(tzinfo=dt.UTC)
        return dt.datetime.max.replace(tzinfo=dt.UTC)
