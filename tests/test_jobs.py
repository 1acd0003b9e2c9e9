"""The job store on each supported database (SQLite file, real PostgreSQL server)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, update

from core.database import async_database_url
from core.jobs import Job, JobStatus, JobStore, jobs_table, utc_now


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    store = JobStore.from_url(database_url)
    await store.create_schema()
    await store.create_schema()  # idempotent: every process calls it at start-up
    try:
        yield store
    finally:
        await store.close()


def accepted_job(**overrides: object) -> Job:
    now = utc_now()
    fields: dict[str, object] = {
        "image_id": str(uuid.uuid4()),
        "status": JobStatus.QUEUED,
        "filter": "grayscale",
        "source_url": "https://example.com/a.png",
        "blob_key": None,
        "request_fingerprint": "f" * 64,
        "requested_at": now,
        "updated_at": now,
    }
    fields.update(overrides)
    return Job(**fields)  # type: ignore[arg-type]


async def test_accepted_job_reads_back_with_aware_timestamps(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)

    stored = await store.get(job.image_id)

    assert stored == job
    assert stored.requested_at.tzinfo is not None


async def test_unknown_job_is_none(store: JobStore) -> None:
    assert await store.get(str(uuid.uuid4())) is None


async def test_accept_after_worker_keeps_the_workers_status(store: JobStore) -> None:
    """The worker may finish before the API records the job: the API's late 'queued' must not win."""
    job = accepted_job()
    finished_at = utc_now() + dt.timedelta(seconds=1)
    async with store.engine.begin() as connection:
        await connection.execute(
            insert(jobs_table).values(
                image_id=job.image_id,
                status=JobStatus.DONE.value,
                filter=job.filter,
                requested_at=job.requested_at,
                updated_at=finished_at,
                finished_at=finished_at,
                attempts=1,
                result_key=f"results/{job.image_id}.png",
            )
        )

    await store.record_accepted(job)

    stored = await store.get(job.image_id)
    assert stored is not None
    assert stored.status is JobStatus.DONE
    assert stored.attempts == 1
    assert stored.result_key == f"results/{job.image_id}.png"
    assert stored.request_fingerprint == job.request_fingerprint, "the API fills in how the job was requested"


async def test_second_accept_of_the_same_job_changes_nothing(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)
    async with store.engine.begin() as connection:
        await connection.execute(
            update(jobs_table).where(jobs_table.c.image_id == job.image_id).values(status=JobStatus.PROCESSING.value)
        )

    await store.record_accepted(accepted_job(image_id=job.image_id, request_fingerprint="0" * 64))

    stored = await store.get(job.image_id)
    assert stored is not None
    assert stored.status is JobStatus.PROCESSING
    assert stored.request_fingerprint == job.request_fingerprint


async def test_ping(store: JobStore) -> None:
    await store.ping()


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///data/x.db", "sqlite+aiosqlite"),
        ("postgresql://u:p@db/images", "postgresql+asyncpg"),
        ("postgres://u:p@db/images", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u:p@db/images", "postgresql+asyncpg"),
    ],
)
def test_plain_urls_get_the_async_driver(given: str, driver: str) -> None:
    assert async_database_url(given).drivername == driver


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        async_database_url("mysql://u:p@db/images")
