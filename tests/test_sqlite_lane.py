"""The API's batched SQLite statements: on the event loop when they need not wait, in a thread when they must."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from core.jobs import Job, JobStatus, JobStore, utc_now
from core.tables import jobs_table
from tests.support.database import migrated_sqlite


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    store = JobStore.from_url(f"sqlite:///{migrated_sqlite(tmp_path / 'jobs.db')}")
    try:
        yield store
    finally:
        await store.close()


def queued_job() -> Job:
    now = utc_now()
    return Job(
        image_id=str(uuid.uuid4()),
        status=JobStatus.QUEUED,
        filter="blur",
        source_url="https://example.com/a.png",
        blob_key=None,
        request_fingerprint="a" * 64,
        requested_at=now,
        updated_at=now,
        owner="key-1",
    )


async def test_rows_written_by_the_lane_are_stored_as_sqlalchemy_stores_them(store: JobStore) -> None:
    by_lane, by_sqlalchemy = queued_job(), queued_job()
    await store.record_accepted(by_lane)
    async with store.engine.begin() as connection:
        values = {column: getattr(by_sqlalchemy, column) for column in ("image_id", "filter", "source_url")}
        await connection.execute(
            insert(jobs_table).values(
                **values,
                status="queued",
                requested_at=by_lane.requested_at,
                updated_at=by_lane.updated_at,
                attempts=0,
            )
        )
        stored = (
            await connection.execute(
                text("SELECT image_id, requested_at, typeof(requested_at) FROM jobs ORDER BY image_id")
            )
        ).all()

    assert len({(when, kind) for _, when, kind in stored}) == 1, f"one format for one time, got {stored}"
    assert await store.get(by_lane.image_id) == by_lane
    assert await store.get_each([by_sqlalchemy.image_id, "missing", by_lane.image_id]) == [
        await store.get(by_sqlalchemy.image_id),
        None,
        by_lane,
    ]


async def test_a_write_that_finds_the_database_locked_waits_in_the_thread_not_on_the_loop(
    store: JobStore, tmp_path: Path
) -> None:
    job = queued_job()
    holder = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as a worker's transaction holds it
    try:
        writing = asyncio.create_task(store.record_accepted(job))
        ticks = 0
        while ticks < 20:  # the loop keeps running while the write waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not writing.done(), "the write waits for the lock"
    finally:
        holder.execute("COMMIT")
        holder.close()
    await asyncio.wait_for(writing, timeout=5.0)

    async with store.engine.connect() as connection:
        assert (await connection.execute(select(jobs_table.c.status))).scalars().all() == ["queued"]
