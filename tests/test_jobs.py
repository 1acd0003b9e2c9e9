"""The job store on each supported database (SQLite file, real PostgreSQL server)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, insert, select, update

from core.database import async_database_url
from core.jobs import Cancelled, Job, JobStatus, JobStore, Started, utc_now
from core.schema import upgrade
from core.tables import jobs_table, processed_events_table


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    store = JobStore.from_url(database_url)
    await upgrade(store.engine)
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


async def test_jobs_are_read_in_the_order_asked_with_none_for_unknown_ones(store: JobStore) -> None:
    first, second = accepted_job(), accepted_job()
    await store.record_accepted(first, second)
    assert await store.get_each([second.image_id, str(uuid.uuid4()), first.image_id]) == [second, None, first]
    assert await store.get_each([]) == []


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


def worker_job(image_id: str, status: JobStatus, **overrides: object) -> Job:
    """The job as a worker writes it: described by the event, without the API's request fingerprint."""
    now = utc_now()
    fields: dict[str, object] = {
        "image_id": image_id,
        "status": status,
        "filter": "grayscale",
        "source_url": "https://example.com/a.png",
        "blob_key": None,
        "request_fingerprint": None,
        "requested_at": now - dt.timedelta(seconds=1),
        "updated_at": now,
        "started_at": now if status is JobStatus.PROCESSING else None,
        "finished_at": None if status is JobStatus.PROCESSING else now,
        "attempts": 1,
        "error": "TransientError: boom" if status is JobStatus.FAILED else None,
        "result_key": f"results/{image_id}.png" if status is JobStatus.DONE else None,
    }
    fields.update(overrides)
    return Job(**fields)  # type: ignore[arg-type]


async def test_processing_before_the_api_inserts_the_job_and_the_api_fills_in_the_rest(store: JobStore) -> None:
    job = accepted_job()

    assert await store.mark_processing(
        worker_job(job.image_id, JobStatus.PROCESSING, attempts=2), event_id=str(uuid.uuid4())
    )
    await store.record_accepted(job)

    stored = await store.get(job.image_id)
    assert stored is not None
    assert stored.status is JobStatus.PROCESSING
    assert stored.attempts == 2
    assert stored.started_at is not None
    assert stored.request_fingerprint == job.request_fingerprint


async def test_processing_updates_an_accepted_job(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)

    assert await store.mark_processing(
        worker_job(job.image_id, JobStatus.PROCESSING, attempts=3), event_id=str(uuid.uuid4())
    )

    stored = await store.get(job.image_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.request_fingerprint) == (
        JobStatus.PROCESSING,
        3,
        job.request_fingerprint,
    )
    assert stored.requested_at == job.requested_at, "the API's description is kept"


async def test_processing_never_reopens_a_done_job(store: JobStore) -> None:
    image_id = str(uuid.uuid4())
    assert await store.complete(worker_job(image_id, JobStatus.DONE), event_id=str(uuid.uuid4()))

    assert await store.mark_processing(
        worker_job(image_id, JobStatus.PROCESSING, attempts=5), event_id=str(uuid.uuid4())
    )

    stored = await store.get(image_id)
    assert stored is not None
    assert (stored.status, stored.attempts) == (JobStatus.DONE, 1)


async def test_processing_after_failure_reopens_the_job_and_clears_the_error(store: JobStore) -> None:
    image_id = str(uuid.uuid4())
    await store.mark_failed(worker_job(image_id, JobStatus.FAILED, attempts=4))

    assert await store.mark_processing(
        worker_job(image_id, JobStatus.PROCESSING, attempts=1), event_id=str(uuid.uuid4())
    )

    stored = await store.get(image_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.error, stored.finished_at) == (JobStatus.PROCESSING, 1, None, None)


async def test_complete_records_the_event_and_the_result_once(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)
    event_id = str(uuid.uuid4())
    assert await store.mark_processing(worker_job(job.image_id, JobStatus.PROCESSING), event_id=event_id)
    assert not await store.is_processed(event_id)

    assert await store.complete(worker_job(job.image_id, JobStatus.DONE), event_id=event_id)
    assert not await store.complete(
        worker_job(job.image_id, JobStatus.DONE, attempts=9, result_key="results/other.png"), event_id=event_id
    ), "the second completion of one event loses"

    assert await store.is_processed(event_id)
    assert not await store.mark_processing(
        worker_job(job.image_id, JobStatus.PROCESSING, attempts=7), event_id=event_id
    ), "a processed event is not started again"
    stored = await store.get(job.image_id)
    assert stored is not None
    assert stored.status is JobStatus.DONE
    assert stored.result_key == f"results/{job.image_id}.png"
    assert stored.attempts == 1
    assert stored.error is None
    assert stored.started_at is not None
    assert stored.request_fingerprint == job.request_fingerprint


async def test_complete_without_a_row_inserts_one(store: JobStore) -> None:
    image_id = str(uuid.uuid4())

    assert await store.complete(worker_job(image_id, JobStatus.DONE), event_id=str(uuid.uuid4()))

    stored = await store.get(image_id)
    assert stored is not None
    assert stored.status is JobStatus.DONE
    assert stored.request_fingerprint is None


async def test_concurrent_completions_of_one_event_have_one_winner(database_url: str) -> None:
    """Two workers (two engines, two connections) finishing the same event at once: exactly one wins."""
    stores = [JobStore.from_url(database_url) for _ in range(2)]
    await upgrade(stores[0].engine)
    image_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        results = await asyncio.gather(
            *(store.complete(worker_job(image_id, JobStatus.DONE), event_id=event_id) for store in stores)
        )
    finally:
        for store in stores:
            await store.close()
    assert sorted(results) == [False, True]


async def test_failed_job_has_no_processed_row(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)

    await store.mark_failed(worker_job(job.image_id, JobStatus.FAILED, attempts=4, error="PermanentError: bad"))

    stored = await store.get(job.image_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.error) == (JobStatus.FAILED, 4, "PermanentError: bad")
    assert stored.finished_at is not None
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(func.count())
            .select_from(processed_events_table)
            .where(processed_events_table.c.image_id == job.image_id)
        )
        assert rows.scalar() == 0, "a later redrive of the event must run again"


async def test_failure_without_a_row_inserts_one(store: JobStore) -> None:
    image_id = str(uuid.uuid4())

    await store.mark_failed(worker_job(image_id, JobStatus.FAILED))

    stored = await store.get(image_id)
    assert stored is not None
    assert stored.status is JobStatus.FAILED


async def test_failure_never_overwrites_a_done_job(store: JobStore) -> None:
    """A duplicate of an event that already succeeded may fail later; the result stays."""
    image_id = str(uuid.uuid4())
    assert await store.complete(worker_job(image_id, JobStatus.DONE), event_id=str(uuid.uuid4()))

    await store.mark_failed(worker_job(image_id, JobStatus.FAILED))

    stored = await store.get(image_id)
    assert stored is not None
    assert (stored.status, stored.error) == (JobStatus.DONE, None)


async def test_worker_writes_check_the_status_they_are_given(store: JobStore) -> None:
    image_id = str(uuid.uuid4())
    with pytest.raises(ValueError, match="expected a processing job, got done"):
        await store.mark_processing(worker_job(image_id, JobStatus.DONE), event_id=str(uuid.uuid4()))
    with pytest.raises(ValueError, match="expected a done job"):
        await store.complete(worker_job(image_id, JobStatus.FAILED), event_id=str(uuid.uuid4()))
    with pytest.raises(ValueError, match="expected a failed job"):
        await store.mark_failed(worker_job(image_id, JobStatus.PROCESSING))


async def test_each_start_of_a_job_counts_as_an_execution(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)
    first = await store.mark_processing(worker_job(job.image_id, JobStatus.PROCESSING), event_id=str(uuid.uuid4()))
    # A worker died mid-job; the redelivered event starts it again (attempts start over, executions do not).
    again = await store.mark_processing(worker_job(job.image_id, JobStatus.PROCESSING), event_id=str(uuid.uuid4()))
    assert isinstance(first, Started)
    assert isinstance(again, Started)
    assert (first.executions, again.executions) == (1, 2)
    stored = await store.get(job.image_id)
    assert stored is not None
    assert (stored.attempts, stored.executions) == (1, 2)


async def test_a_start_records_the_records_coordinates_and_a_later_start_replaces_them(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)
    first = worker_job(job.image_id, JobStatus.PROCESSING, kafka_topic="images", kafka_partition=1, kafka_offset=41)
    assert await store.mark_processing(first, event_id=str(uuid.uuid4()))
    await store.record_accepted(job)  # the API's late row keeps the worker's coordinates
    stored = await store.get(job.image_id)
    assert stored is not None
    assert (stored.kafka_topic, stored.kafka_partition, stored.kafka_offset) == ("images", 1, 41)

    redriven = worker_job(job.image_id, JobStatus.PROCESSING, kafka_topic="images", kafka_partition=1, kafka_offset=90)
    assert await store.mark_processing(redriven, event_id=str(uuid.uuid4()))
    assert await store.complete(worker_job(job.image_id, JobStatus.DONE, kafka_offset=None), event_id="e")

    stored = await store.get(job.image_id)
    assert stored is not None
    assert (stored.status, stored.kafka_partition, stored.kafka_offset) == (JobStatus.DONE, 1, 90)


async def test_a_queued_job_is_cancelled_and_cancelling_it_again_answers_the_same(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)

    cancelled = await store.cancel(job.image_id)

    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert cancelled.started_at is None
    assert await store.get(job.image_id) == cancelled
    assert await store.cancel(job.image_id) == cancelled, "a second cancel changes nothing and says cancelled"


async def test_a_job_with_no_row_yet_is_not_cancelled_and_gets_no_row(store: JobStore) -> None:
    image_id = str(uuid.uuid4())
    assert await store.cancel(image_id) is None
    assert await store.get(image_id) is None


async def test_a_cancelled_job_is_never_started_nor_failed(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)
    cancelled = await store.cancel(job.image_id)

    started = await store.mark_processing(worker_job(job.image_id, JobStatus.PROCESSING), event_id=str(uuid.uuid4()))
    await store.mark_failed(worker_job(job.image_id, JobStatus.FAILED))
    await store.record_accepted(job)  # the API's late row

    assert isinstance(started, Cancelled)
    stored = await store.get(job.image_id)
    assert stored == cancelled
    assert stored is not None
    assert (stored.executions, stored.kafka_offset) == (0, None), "no execution counted, no record noted"


async def test_a_started_or_finished_job_is_not_cancelled(store: JobStore) -> None:
    job = accepted_job()
    await store.record_accepted(job)
    event_id = str(uuid.uuid4())
    assert isinstance(
        await store.mark_processing(worker_job(job.image_id, JobStatus.PROCESSING), event_id=event_id), Started
    )

    running = await store.cancel(job.image_id)

    assert running is not None
    assert running.status is JobStatus.PROCESSING
    assert await store.complete(worker_job(job.image_id, JobStatus.DONE), event_id=event_id), "the job still finishes"
    done = await store.cancel(job.image_id)
    assert done is not None
    assert done.status is JobStatus.DONE


async def test_a_row_a_worker_wrote_first_is_not_cancelled(store: JobStore) -> None:
    """The worker may write the row before the API: it is processing, so the cancel loses."""
    image_id = str(uuid.uuid4())
    assert isinstance(
        await store.mark_processing(worker_job(image_id, JobStatus.PROCESSING), event_id=str(uuid.uuid4())), Started
    )

    running = await store.cancel(image_id)

    assert running is not None
    assert running.status is JobStatus.PROCESSING


async def test_a_cancel_racing_a_start_has_one_winner(database_url: str) -> None:
    """The API and a worker (two engines, two connections) on one queued job at once: exactly one of them wins,
    and the loser is told so; never a cancelled job that a worker runs, nor a running job that reads cancelled."""
    api, worker = JobStore.from_url(database_url), JobStore.from_url(database_url)
    await upgrade(api.engine)
    jobs = [accepted_job() for _ in range(20)]
    try:
        await api.record_accepted(*jobs)
        for job in jobs:
            after_cancel, started = await asyncio.gather(
                api.cancel(job.image_id),
                worker.mark_processing(worker_job(job.image_id, JobStatus.PROCESSING), event_id=str(uuid.uuid4())),
            )
            stored = await api.get(job.image_id)
            assert after_cancel is not None
            assert stored is not None
            if isinstance(started, Cancelled):
                assert after_cancel.status is stored.status is JobStatus.CANCELLED
                assert stored.executions == 0
            else:
                assert isinstance(started, Started)
                assert after_cancel.status is stored.status is JobStatus.PROCESSING
                assert started.executions == 1
    finally:
        await api.close()
        await worker.close()
