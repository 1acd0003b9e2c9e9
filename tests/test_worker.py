"""The worker engine in-process against a real broker: outcomes, ordering, duplicates, poison, commits."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy.exc
from PIL import Image

from consumer.handler import JobHandler
from consumer.probes import serve_probes
from consumer.worker import Worker
from core.blobs import open_blob_store
from core.jobs import Job, JobStatus, JobStore
from core.schema import upgrade
from core.settings import Settings
from tests.support.events import as_record, url_event
from tests.support.image_server import ImageServer
from tests.support.images import png_bytes
from tests.support.kafka_reads import read_topic
from tests.support.settings import worker_test_settings
from tests.support.worker import (
    alter_topic_configs,
    committed_and_end_offsets,
    count_jobs,
    count_processed,
    create_topic_with_configs,
    eventually,
    offsets_all_committed,
    produce,
    running_worker,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return worker_test_settings(
        kafka_bootstrap,
        tmp_path,
        max_attempts=2,
        retry_backoff_max_s=0.2,
        fetch_timeout_s=1.0,
        shutdown_timeout_s=10.0,
    )


async def test_jobs_are_processed_and_offsets_committed(
    worker_settings: Settings, images: ImageServer, jobs: JobStore
) -> None:
    events = [url_event(images.url(f"/img/{seed}.png"), "grayscale") for seed in range(20)]
    await produce(worker_settings, map(as_record, events))

    async with running_worker(worker_settings):
        await eventually(lambda: _all_done(jobs, len(events)), what="all jobs done")
        await eventually(lambda: offsets_all_committed(worker_settings), what="offsets committed")

    blobs = open_blob_store(worker_settings)
    for seed, event in enumerate(events):
        job = await jobs.get(str(event.image_id))
        assert job is not None
        assert job.result_key == blobs.result_key(str(event.image_id))
        expected = Image.open(io.BytesIO(png_bytes(seed=seed))).convert("L")
        result = Image.open(io.BytesIO(await blobs.get(job.result_key)))
        assert result.mode == "L"
        assert result.tobytes() == expected.tobytes()
    assert await count_processed(jobs) == len(events)
    assert all(count == 1 for count in images.hits.values())


async def test_same_event_twice_runs_once(worker_settings: Settings, images: ImageServer, jobs: JobStore) -> None:
    event = url_event(images.url("/img/7.png"), "invert")
    await produce(worker_settings, [as_record(event), as_record(event)])

    async with running_worker(worker_settings) as worker:
        await eventually(lambda: offsets_all_committed(worker_settings), what="both offsets committed")

    assert images.hits["/img/7.png"] == 1
    assert await count_processed(jobs) == 1
    outcomes = {
        sample.labels["outcome"]: sample.value
        for metric in worker.metrics.registry.collect()
        if metric.name == "image_worker_records"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    assert outcomes == {"done": 1.0, "skipped_duplicate": 1.0}


async def test_events_of_one_image_run_in_offset_order(
    worker_settings: Settings, images: ImageServer, jobs: JobStore
) -> None:
    """One key's events run one at a time in offset order, while other keys overtake them."""
    settings = worker_settings.model_copy(update={"topic_partitions": 1})
    image_id = uuid.uuid4()
    ordered = [url_event(images.url(f"/img/{seed}.png?delay=0.1"), "blur", image_id) for seed in range(6)]
    others = [url_event(images.url(f"/img/{100 + seed}.png"), "blur") for seed in range(6)]
    interleaved = [record for pair in zip(ordered, others, strict=True) for record in map(as_record, pair)]
    await produce(settings, interleaved)

    async with running_worker(settings):
        await eventually(lambda: offsets_all_committed(settings), what="all offsets committed")

    same_key_order = [path for path in images.order if int(path[5:-4]) < 100]
    assert same_key_order == [f"/img/{seed}.png" for seed in range(6)]
    assert images.order.index("/img/105.png") < images.order.index("/img/5.png"), "other keys must not wait"
    assert await count_processed(jobs) == 12


async def test_poison_records_are_dead_lettered_once_with_metadata(
    worker_settings: Settings, images: ImageServer, jobs: JobStore
) -> None:
    good = [url_event(images.url(f"/img/{seed}.png"), "sepia") for seed in range(5)]
    wrong_schema = json.dumps({"type": "image_process", "version": 1, "image": "x"}).encode()
    corrupt = url_event(images.url("/corrupt.png"), "sepia")
    hanging = url_event(images.url("/hang"), "sepia")
    poison: list[tuple[bytes | None, bytes | None]] = [
        (b"garbage-key", b"\x00\xffnot json at all"),
        (b"schema-key", wrong_schema),
        as_record(corrupt),
        as_record(hanging),
    ]
    await produce(worker_settings, [*map(as_record, good[:2]), *poison, *map(as_record, good[2:])])

    async with running_worker(worker_settings):
        await eventually(lambda: offsets_all_committed(worker_settings), what="all offsets committed")

    dead = await read_topic(worker_settings, worker_settings.dlq_topic)
    assert sorted((r.key, r.value) for r in dead) == sorted(poison)
    by_key = {record.key: dict(record.headers) for record in dead}
    hanging_headers = by_key[str(hanging.image_id).encode()]
    assert hanging_headers["dlq.attempts"] == b"2", "a timeout is transient: retried up to max_attempts"
    assert by_key[b"garbage-key"]["dlq.attempts"] == b"1", "undecodable bytes are permanent"
    assert by_key[str(corrupt.image_id).encode()]["dlq.attempts"] == b"1"
    for headers in by_key.values():
        assert headers["dlq.original.topic"] == worker_settings.images_topic.encode()
        assert headers["dlq.consumer_group"] == worker_settings.consumer_group.encode()
        assert int(headers["dlq.original.offset"]) >= 0
        assert headers["dlq.error.class"]
        assert headers["dlq.error.message"]
        assert b"Traceback" in headers["dlq.error.traceback"]
        assert headers["dlq.first_failure_at"] <= headers["dlq.last_failure_at"]
    assert images.hits["/hang"] == 2
    assert await count_jobs(jobs, JobStatus.DONE) == len(good)
    failed = await jobs.get(str(corrupt.image_id))
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.error


async def _all_done(jobs: JobStore, expected: int) -> bool:
    return await count_jobs(jobs, JobStatus.DONE) == expected


async def test_failed_dead_letter_write_keeps_the_record_uncommitted_until_it_succeeds(
    worker_settings: Settings, images: ImageServer
) -> None:
    """If the DLQ refuses the record, its offset is not committed and the write is retried; once the DLQ accepts
    it, exactly one dead letter appears."""
    settings = worker_settings.model_copy(update={"topic_partitions": 1})
    await create_topic_with_configs(
        settings, settings.dlq_topic, {"max.message.bytes": "200"}
    )  # smaller than any dead letter
    poison = (b"poison", b"not an event")
    good = [url_event(images.url(f"/img/{seed}.png"), "invert") for seed in range(3)]
    await produce(settings, [as_record(good[0]), poison, *map(as_record, good[1:])])

    async with running_worker(settings):
        jobs = JobStore.from_url(settings.database_url)
        await eventually(lambda: _all_done(jobs, 3), what="good jobs done around the poison")
        committed, _ = await committed_and_end_offsets(settings)
        assert committed.get(0, 0) <= 1, "nothing at or after the undelivered dead letter is committed"
        assert await read_topic(settings, settings.dlq_topic) == []

        await alter_topic_configs(settings, settings.dlq_topic, {"max.message.bytes": "1048588"})
        await eventually(lambda: offsets_all_committed(settings), what="offsets committed after the DLQ fix")
        await jobs.close()

    dead = await read_topic(settings, settings.dlq_topic)
    assert [(record.key, record.value) for record in dead] == [poison]


class LockedDatabase(JobStore):
    """A job store whose writes fail as a locked SQLite file does, a set number of times each."""

    def __init__(self, database_url: str, *, complete_failures: int, mark_failed_failures: int) -> None:
        super().__init__(JobStore.from_url(database_url).engine)
        self.failures_left = {"complete": complete_failures, "mark_failed": mark_failed_failures}
        self.calls = {"complete": 0, "mark_failed": 0}

    def _maybe_fail(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.failures_left[operation] > 0:
            self.failures_left[operation] -= 1
            raise sqlalchemy.exc.OperationalError("UPDATE jobs", {}, Exception("database is locked"))

    async def complete(self, job: Job, *, event_id: str) -> bool:
        self._maybe_fail("complete")
        return await super().complete(job, event_id=event_id)

    async def mark_failed(self, job: Job) -> None:
        self._maybe_fail("mark_failed")
        await super().mark_failed(job)


async def test_unavailable_database_spends_no_attempts_and_dead_letters_nothing(
    worker_settings: Settings, images: ImageServer
) -> None:
    """A database outage is not the event's fault: the record waits for the database, past max_attempts, and
    the job is done once it answers; a dead-lettered job is marked failed once the database answers too."""
    settings = worker_settings.model_copy(update={"topic_partitions": 1})
    good = url_event(images.url("/img/1.png"), "invert")
    poison = url_event(images.url("/corrupt.png"), "invert")
    outage = settings.max_attempts * 3
    jobs = LockedDatabase(settings.database_url, complete_failures=outage, mark_failed_failures=outage)
    await upgrade(jobs.engine)
    await produce(settings, [as_record(good), as_record(poison)])
    handler = JobHandler(settings, jobs, open_blob_store(settings))
    worker = Worker(settings, handler)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: offsets_all_committed(settings), what="both records committed")
    finally:
        worker.stop()
        await task
        await handler.aclose()
    try:
        assert jobs.calls == {"complete": outage + 1, "mark_failed": outage + 1}
        statuses = [await jobs.get(str(event.image_id)) for event in (good, poison)]
        assert [job.status if job else None for job in statuses] == [JobStatus.DONE, JobStatus.FAILED]
    finally:
        await jobs.close()
    dead = await read_topic(settings, settings.dlq_topic)
    assert [record.key for record in dead] == [str(poison.image_id).encode()]


async def test_probes_serve_liveness_and_metrics(worker_settings: Settings, images: ImageServer) -> None:
    await produce(worker_settings, [as_record(url_event(images.url("/img/3.png"), "emboss"))])
    async with running_worker(worker_settings) as worker, serve_probes(worker, port := _free_port(), "127.0.0.1"):
        await eventually(lambda: offsets_all_committed(worker_settings), what="job committed")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            livez = await client.get("/livez")
            metrics = (await client.get("/metrics")).text

    assert livez.status_code == 200
    assert livez.json() == {"alive": True, "problems": []}
    assert 'image_worker_records_total{outcome="done"} 1.0' in metrics
    assert "image_worker_processing_seconds_bucket" in metrics
    assert "image_worker_in_flight 0.0" in metrics
    lag_lines = [line for line in metrics.splitlines() if line.startswith("image_worker_consumer_lag{")]
    assert len(lag_lines) == worker_settings.topic_partitions
    assert all(line.endswith(" 0.0") for line in lag_lines), lag_lines


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_job_outliving_the_drain_is_cancelled_uncommitted_and_redone(
    worker_settings: Settings, images: ImageServer, jobs: JobStore
) -> None:
    settings = worker_settings.model_copy(update={"shutdown_timeout_s": 0.5, "fetch_timeout_s": 30.0})
    slow = url_event(images.url("/img/9.png?delay=5"), "grayscale")
    await produce(settings, [as_record(slow)])

    async with running_worker(settings):
        await images.wait_for_hits("/img/9.png", 1)
    # The block waited for the worker to stop: the drain gave up after 0.5 s and cancelled the job.
    assert await count_jobs(jobs, JobStatus.DONE) == 0
    assert not await offsets_all_committed(settings)

    fast_again = settings.model_copy(update={"shutdown_timeout_s": 10.0})
    async with running_worker(fast_again):
        await eventually(lambda: _all_done(jobs, 1), what="the cancelled job done by the next run")
    assert images.hits["/img/9.png"] == 2
