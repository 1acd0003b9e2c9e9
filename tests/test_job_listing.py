"""Listing jobs a page at a time, and counting them, on each supported database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.job_listing import decode_cursor, encode_cursor
from core.jobs import FinishedBucket, Job, JobQuery, JobStatus, JobStore, MalformedCursor
from core.schema import upgrade

STATUSES = (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.DONE, JobStatus.FAILED, JobStatus.DONE)
JOB_COUNT = 45
ALICE, BOB = "alice", "bob"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    store = JobStore.from_url(database_url)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def t0() -> dt.datetime:
    """A moment of this test's own: the session's PostgreSQL database holds other tests' jobs too."""
    return dt.datetime(2031, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=uuid.uuid4().int % 30_000)


def make_job(t0: dt.datetime, number: int, owner: str) -> Job:
    """Job ``number``: three share each requested_at (the id breaks ties); statuses and filters take turns."""
    requested_at = t0 + dt.timedelta(seconds=number // 3)
    status = STATUSES[number % len(STATUSES)]
    finished = status in (JobStatus.DONE, JobStatus.FAILED)
    return Job(
        image_id=str(uuid.uuid4()),
        status=status,
        filter=("blur", "sepia", "invert")[number % 3],
        source_url=f"https://example.com/{number}.png",
        blob_key=None,
        request_fingerprint="f" * 64,
        requested_at=requested_at,
        updated_at=requested_at,
        finished_at=requested_at + dt.timedelta(seconds=30) if finished else None,
        owner=owner,
    )


@pytest.fixture
async def listed(store: JobStore, t0: dt.datetime) -> list[Job]:
    """45 jobs, a quarter of them Bob's and the rest Alice's, newest first as the listing orders them."""
    jobs = [make_job(t0, number, BOB if number % 4 == 0 else ALICE) for number in range(JOB_COUNT)]
    await store.record_accepted(*jobs)
    return sorted(jobs, key=lambda job: (job.requested_at, job.image_id), reverse=True)


def around(t0: dt.datetime, **criteria: Any) -> JobQuery:
    """``criteria`` over this test's jobs only."""
    return JobQuery(requested_after=t0, requested_before=t0 + dt.timedelta(hours=1), **criteria)


async def every_page(store: JobStore, query: JobQuery, limit: int) -> list[list[Job]]:
    pages, cursor = [], None
    while True:
        page = await store.list_jobs(query, cursor=cursor, limit=limit)
        pages.append(list(page.jobs))
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def listed_ids(store: JobStore, query: JobQuery) -> list[str]:
    return [job.image_id for page in await every_page(store, query, 7) for job in page]


async def test_pages_cover_every_job_once_newest_first(store: JobStore, listed: list[Job], t0: dt.datetime) -> None:
    pages = await every_page(store, around(t0), limit=20)

    assert [len(page) for page in pages] == [20, 20, 5]
    assert [job for page in pages for job in page] == listed, "no duplicates, no gaps, in order"
    assert len(await every_page(store, around(t0), limit=JOB_COUNT)) == 1, "no empty page after the last"


async def test_filters_combine_and_an_owner_sees_only_its_own(
    store: JobStore, listed: list[Job], t0: dt.datetime
) -> None:
    after, before = t0 + dt.timedelta(seconds=3), t0 + dt.timedelta(seconds=10)
    prefix = listed[0].image_id[:2]

    assert await listed_ids(store, around(t0, owner=BOB)) == [job.image_id for job in listed if job.owner == BOB]
    assert await listed_ids(store, around(t0, owner=ALICE, status=JobStatus.DONE, filter="blur")) == [
        job.image_id for job in listed if job.owner == ALICE and job.status is JobStatus.DONE and job.filter == "blur"
    ]
    # requested_after is inclusive, requested_before exclusive; a time in another zone means the same moment.
    in_paris = after.astimezone(dt.timezone(dt.timedelta(hours=1)))
    window = JobQuery(requested_after=in_paris, requested_before=before)
    assert await listed_ids(store, window) == [job.image_id for job in listed if after <= job.requested_at < before]
    assert await listed_ids(store, around(t0, id_prefix=prefix.upper())) == [
        job.image_id for job in listed if job.image_id.startswith(prefix)
    ]
    assert await listed_ids(store, around(t0, id_prefix="%")) == [], "LIKE's wildcards are plain characters"


async def test_a_cursor_no_page_made_is_refused(store: JobStore, listed: list[Job], t0: dt.datetime) -> None:
    first = await store.list_jobs(around(t0), limit=5)
    assert first.next_cursor is not None
    assert decode_cursor(first.next_cursor) == (first.jobs[-1].requested_at, first.jobs[-1].image_id)
    for cursor in ("", "abc", first.next_cursor[:-1], first.next_cursor + "0", "1." + "g" * 32):
        with pytest.raises(MalformedCursor):
            await store.list_jobs(JobQuery(), cursor=cursor, limit=5)
    with pytest.raises(ValueError, match="limit must be 1 to 100"):
        await store.list_jobs(JobQuery(), limit=101)


def test_a_cursor_round_trips_from_any_zone() -> None:
    image_id = str(uuid.uuid4())
    moment = dt.datetime(2026, 11, 2, 10, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert decode_cursor(encode_cursor(moment, image_id)) == (moment.astimezone(dt.UTC), image_id)


async def test_status_counts_of_one_owner_and_of_everyone(store: JobStore, t0: dt.datetime) -> None:
    owner = str(uuid.uuid4())  # of this test alone
    jobs = [make_job(t0, number, owner) for number in range(12)]
    await store.record_accepted(*jobs)
    before = await store.status_counts()
    await store.record_accepted(make_job(t0, 0, "someone else"))

    assert await store.status_counts(owner) == {
        status: sum(1 for job in jobs if job.status is status) for status in JobStatus
    }
    after = await store.status_counts()
    assert after[JobStatus.QUEUED] == before[JobStatus.QUEUED] + 1
    assert await store.status_counts("nobody") == dict.fromkeys(JobStatus, 0)


async def test_finished_counts_per_bucket(store: JobStore, t0: dt.datetime) -> None:
    base = t0  # midnight: a whole number of 10 s buckets since 1970
    finished = [
        (JobStatus.DONE, 0.5),
        (JobStatus.DONE, 9.9),
        (JobStatus.FAILED, 10.0),
        (JobStatus.DONE, 35.0),
        (JobStatus.DONE, -1.0),  # before the first bucket: not counted
    ]
    jobs = [
        dataclasses.replace(make_job(t0, 0, "x"), status=status, finished_at=base + dt.timedelta(seconds=offset_s))
        for status, offset_s in finished
    ]
    await store.record_accepted(*jobs)

    buckets = await store.finished_counts(base + dt.timedelta(seconds=3), 10, until=base + dt.timedelta(seconds=41))

    assert buckets == [
        FinishedBucket(base, done=2, failed=0),  # the bucket holding `since` is counted whole
        FinishedBucket(base + dt.timedelta(seconds=10), done=0, failed=1),
        FinishedBucket(base + dt.timedelta(seconds=20), done=0, failed=0),
        FinishedBucket(base + dt.timedelta(seconds=30), done=1, failed=0),
        FinishedBucket(base + dt.timedelta(seconds=40), done=0, failed=0),
    ]
    with pytest.raises(ValueError, match="use longer buckets"):
        await store.finished_counts(base - dt.timedelta(days=1), 1, until=base)
