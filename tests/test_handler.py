"""The per-record work, fed ``ConsumerRecord`` objects directly (no broker), on each supported database."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from consumer.download import BlockedUrl, HttpClientError
from consumer.errors import PermanentError, TransientError
from consumer.handler import JobHandler
from consumer.outcomes import Outcome
from consumer.render import UnusableImage
from core.blobs import BlobStore, ThumbnailKind
from core.file_blobs import FileBlobStore
from core.jobs import Job, JobStatus, JobStore, utc_now
from core.schema import upgrade
from core.settings import Settings
from schemas import EventDecodeError, FilterName, ImageProcessV1
from tests.support.events import blob_event, event_record, make_record, url_event
from tests.support.http_servers import Hit, respond, serving
from tests.support.images import encoded, png_bytes, truncated_png
from tests.support.settings import make_settings

HandlerFactory = Callable[..., JobHandler]


@pytest.fixture
async def jobs(database_url: str) -> AsyncIterator[JobStore]:
    store = JobStore.from_url(database_url)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "blobs")


@pytest.fixture
async def make_handler(
    tmp_path: Path, jobs: JobStore, blobs: BlobStore, database_url: str
) -> AsyncIterator[HandlerFactory]:
    """Handlers over the test's database and blob store; settings may be overridden; all closed afterwards."""
    handlers: list[JobHandler] = []

    def factory(**overrides: Any) -> JobHandler:
        fields: dict[str, Any] = {"database_url": database_url, "allow_private_urls": True, "fetch_timeout_s": 5.0}
        fields.update(overrides)
        settings: Settings = make_settings("localhost:9092", tmp_path, **fields)
        handler = JobHandler(settings, jobs, blobs)
        handlers.append(handler)
        return handler

    yield factory
    for handler in handlers:
        await handler.aclose()


@pytest.fixture
def handler(make_handler: HandlerFactory) -> JobHandler:
    return make_handler()


async def stored_job(jobs: JobStore, event: ImageProcessV1) -> Job:
    job = await jobs.get(str(event.image_id))
    assert job is not None
    return job


# --- success ----------------------------------------------------------------------------------------------------------


async def test_uploaded_image_is_filtered_stored_and_the_job_done(
    handler: JobHandler, jobs: JobStore, blobs: BlobStore, caplog: pytest.LogCaptureFixture
) -> None:
    data = png_bytes()
    event = await blob_event(blobs, data)
    caplog.set_level(logging.INFO, logger="consumer.handler")

    assert await handler.handle(event_record(event), attempt=1) is Outcome.DONE

    result_key = blobs.result_key(str(event.image_id))
    result = Image.open(io.BytesIO(await blobs.get(result_key)))
    expected = Image.open(io.BytesIO(data)).convert("L")
    assert (result.format, result.mode, result.size) == ("PNG", "L", expected.size)
    assert result.tobytes() == expected.tobytes()
    job = await stored_job(jobs, event)
    assert (job.status, job.result_key, job.error, job.attempts) == (JobStatus.DONE, result_key, None, 1)
    assert (job.kafka_topic, job.kafka_partition, job.kafka_offset) == ("images", 2, 7)
    assert job.started_at is not None
    assert job.finished_at is not None
    assert await jobs.is_processed(str(event.event_id))
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [
        (
            logging.INFO,
            f"Processing image {event.source.key} with filter grayscale... Done "  # type: ignore[union-attr]
            f"(topic=images partition=2 offset=7 key={event.image_id})",
        )
    ]


async def test_url_image_is_fetched_once_and_a_duplicate_is_skipped(handler: JobHandler, jobs: JobStore) -> None:
    async with serving(respond(body=png_bytes())) as server:
        event = url_event(server.url(), FilterName.THUMBNAIL)

        first = await handler.handle(event_record(event), attempt=1)
        second = await handler.handle(event_record(event), attempt=1)

    assert (first, second) == (Outcome.DONE, Outcome.SKIPPED_DUPLICATE)
    assert len(server.hits) == 1, "the duplicate fetched nothing"
    job = await stored_job(jobs, event)
    assert job.status is JobStatus.DONE
    assert job.source_url == server.url()


async def test_thumbnails_and_a_url_jobs_original_are_stored_before_the_job_is_done(
    handler: JobHandler, jobs: JobStore, blobs: BlobStore
) -> None:
    """For the console: thumbnails of source and result, at most 256 px a side, and the original of a URL job."""
    photo = encoded(Image.new("RGBA", (600, 300), (200, 30, 30, 128)))
    upload = await blob_event(blobs, png_bytes((40, 20)))
    async with serving(respond(body=photo)) as server:
        fetched = url_event(server.url(), FilterName.INVERT)
        assert await handler.handle(event_record(fetched), attempt=1) is Outcome.DONE
    assert await handler.handle(event_record(upload), attempt=1) is Outcome.DONE

    sizes = {}
    for event in (fetched, upload):
        for kind in ThumbnailKind:
            thumbnail = Image.open(io.BytesIO(await blobs.get(blobs.thumbnail_key(str(event.image_id), kind))))
            assert thumbnail.format == "WEBP"
            sizes[event.image_id, kind] = thumbnail.size
    assert sizes[fetched.image_id, ThumbnailKind.SOURCE] == sizes[fetched.image_id, ThumbnailKind.RESULT] == (256, 128)
    assert sizes[upload.image_id, ThumbnailKind.SOURCE] == (40, 20), "a small image is not enlarged"
    assert await blobs.get(blobs.original_key(str(fetched.image_id))) == photo
    assert not await blobs.exists(blobs.original_key(str(upload.image_id))), "an upload stays at its upload key"


async def test_worker_first_then_the_api_fills_in_the_request(
    handler: JobHandler, jobs: JobStore, blobs: BlobStore
) -> None:
    """The API records the job after the broker's ack, so the worker can finish before the row exists."""
    event = await blob_event(blobs, png_bytes())
    assert await jobs.get(str(event.image_id)) is None

    assert await handler.handle(event_record(event), attempt=2) is Outcome.DONE
    job = await stored_job(jobs, event)
    assert (job.status, job.attempts, job.request_fingerprint) == (JobStatus.DONE, 2, None)
    assert job.blob_key == event.source.key  # type: ignore[union-attr]

    await jobs.record_accepted(
        Job(
            image_id=str(event.image_id),
            status=JobStatus.QUEUED,
            filter=event.filter.value,
            source_url=None,
            blob_key=job.blob_key,
            request_fingerprint="a" * 64,
            requested_at=event.requested_at,
            updated_at=utc_now(),
        )
    )
    job = await stored_job(jobs, event)
    assert (job.status, job.request_fingerprint) == (JobStatus.DONE, "a" * 64)


async def test_concurrent_duplicates_process_once(
    make_handler: HandlerFactory, jobs: JobStore, blobs: BlobStore
) -> None:
    """Two workers on one event at once (a rebalance): both may do the work, exactly one records it."""
    first, second = make_handler(job_extra_delay_s=0.3), make_handler(job_extra_delay_s=0.3)
    event = await blob_event(blobs, png_bytes())

    outcomes = await asyncio.gather(first.handle(event_record(event), 1), second.handle(event_record(event), 1))

    assert sorted(outcomes) == [Outcome.DONE, Outcome.SKIPPED_DUPLICATE]
    assert (await stored_job(jobs, event)).status is JobStatus.DONE


async def test_a_cancelled_job_is_skipped_without_touching_its_image(
    handler: JobHandler, jobs: JobStore, blobs: BlobStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled while queued: no download, no read of the upload, nothing recorded; one line says why."""
    upload = await blob_event(blobs, png_bytes())
    await blobs.delete(blobs.upload_key(str(upload.image_id)))  # a read would fail the job as a missing upload
    caplog.set_level(logging.INFO, logger="consumer.handler")
    async with serving(respond(body=png_bytes())) as server:
        fetched = url_event(server.url())
        outcomes = []
        for event in (fetched, upload):
            await jobs.record_accepted(Job.from_event(event, JobStatus.QUEUED, now=utc_now()))
            cancelled = await jobs.cancel(str(event.image_id))
            outcomes.append(await handler.handle(event_record(event), attempt=1))
            assert await stored_job(jobs, event) == cancelled, "nothing else recorded"
            assert not await jobs.is_processed(str(event.event_id))
            assert not await blobs.exists(blobs.result_key(str(event.image_id)))

    assert outcomes == [Outcome.SKIPPED_CANCELLED] * 2
    assert server.hits == [], "the image was never downloaded"
    assert [record.getMessage() for record in caplog.records] == [
        f"Skipping job {event.image_id}: cancelled before it started "
        f"(topic=images partition=2 offset=7 key={event.image_id})"
        for event in (fetched, upload)
    ]


async def test_cpu_work_runs_in_the_given_executor(tmp_path: Path, jobs: JobStore, blobs: BlobStore) -> None:
    submitted: list[object] = []

    class RecordingExecutor(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
            submitted.append(fn)
            return super().submit(fn, *args, **kwargs)

    with RecordingExecutor(max_workers=1) as executor:
        handler = JobHandler(make_settings("localhost:9092", tmp_path), jobs, blobs, executor=executor)
        event = await blob_event(blobs, png_bytes(), FilterName.BLUR)
        assert await handler.handle(event_record(event), attempt=1) is Outcome.DONE
        await handler.aclose()
        assert executor.submit(lambda: "still open").result() == "still open", "a given executor is not shut down"
    assert submitted[0].__name__ == "render"  # type: ignore[attr-defined]


# --- permanent failures -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"\xff\xfe not utf-8",
        b"not json",
        b"[1, 2]",
        json.dumps({"type": "image_process", "version": 1, "event_id": "nope"}).encode(),
        json.dumps({"type": "image_process", "version": 99}).encode(),
        json.dumps({"type": "something_else", "version": 1}).encode(),
    ],
)
async def test_undecodable_records_are_permanent(handler: JobHandler, value: bytes | None) -> None:
    with pytest.raises(PermanentError, match="undecodable record") as caught:
        await handler.handle(make_record(value), attempt=1)
    assert isinstance(caught.value.__cause__, EventDecodeError)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "cannot"),
        (b"definitely not an image", "not an image in an accepted format"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not an image in an accepted format"),
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n", "accepted format"),
        (truncated_png(), "cannot decode the image"),
    ],
    ids=["corrupt-png", "garbage", "eps-disguised", "pdf-disguised", "truncated-png"],
)
async def test_bad_images_are_permanent(
    handler: JobHandler, jobs: JobStore, blobs: BlobStore, data: bytes, message: str
) -> None:
    event = await blob_event(blobs, data)

    with pytest.raises(PermanentError, match=message):
        await handler.handle(event_record(event), attempt=1)

    assert not await jobs.is_processed(str(event.event_id))
    assert (await stored_job(jobs, event)).status is JobStatus.PROCESSING, "the engine marks it failed after the DLQ"
    assert not await blobs.exists(blobs.result_key(str(event.image_id)))


@pytest.mark.parametrize("side_px", [12, 30], ids=["over-the-limit", "over-twice-the-limit"])
async def test_images_over_the_pixel_limit_are_permanent(
    handler: JobHandler, blobs: BlobStore, monkeypatch: pytest.MonkeyPatch, side_px: int
) -> None:
    event = await blob_event(blobs, png_bytes((side_px, side_px)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)

    with pytest.raises(PermanentError, match="too many pixels"):
        await handler.handle(event_record(event), attempt=1)


async def test_missing_upload_is_permanent(handler: JobHandler, blobs: BlobStore) -> None:
    event = await blob_event(blobs, png_bytes())
    await blobs.delete(event.source.key)  # type: ignore[union-attr]

    with pytest.raises(PermanentError, match="missing from the blob store"):
        await handler.handle(event_record(event), attempt=1)


async def test_upload_with_a_wrong_checksum_is_permanent(handler: JobHandler, blobs: BlobStore) -> None:
    event = await blob_event(blobs, png_bytes())
    await blobs.put(event.source.key, png_bytes((5, 5)))  # type: ignore[union-attr]

    with pytest.raises(PermanentError, match="does not match its checksum"):
        await handler.handle(event_record(event), attempt=1)


async def test_blocked_url_is_permanent(make_handler: HandlerFactory, jobs: JobStore) -> None:
    handler = make_handler(allow_private_urls=False)
    async with serving(respond(body=png_bytes())) as canary:
        with pytest.raises(BlockedUrl):
            await handler.handle(event_record(url_event(canary.url())), attempt=1)
    assert canary.hits == []


# --- failures the engine dead-lettered --------------------------------------------------------------------------------


async def test_record_failure_marks_the_job_failed_and_a_redrive_runs_again(
    handler: JobHandler, jobs: JobStore
) -> None:
    body = {"status": 404}

    async def responder(hit: Hit, writer: asyncio.StreamWriter) -> None:
        await respond(body["status"], png_bytes())(hit, writer)

    async with serving(responder) as server:
        event = url_event(server.url())
        record = event_record(event)
        with pytest.raises(HttpClientError) as caught:
            await handler.handle(record, attempt=1)

        await handler.record_failure(record, caught.value, attempts=1)

        job = await stored_job(jobs, event)
        assert (job.status, job.attempts) == (JobStatus.FAILED, 1)
        assert job.error == f"HttpClientError: {server.url()} answered HTTP 404 Not Found"
        assert job.finished_at is not None
        assert not await jobs.is_processed(str(event.event_id))

        body["status"] = 200  # the image appeared; the DLQ record is replayed
        assert await handler.handle(record, attempt=1) is Outcome.DONE
    job = await stored_job(jobs, event)
    assert (job.status, job.error) == (JobStatus.DONE, None)


async def test_record_failure_inserts_a_missing_job(handler: JobHandler, jobs: JobStore) -> None:
    event = url_event("https://example.com/a.png")

    await handler.record_failure(event_record(event), TransientError("HTTP 503"), attempts=4)

    job = await stored_job(jobs, event)
    assert (job.status, job.attempts, job.error) == (JobStatus.FAILED, 4, "TransientError: HTTP 503")


async def test_record_failure_of_an_undecodable_record_only_logs(
    handler: JobHandler, caplog: pytest.LogCaptureFixture
) -> None:
    await handler.record_failure(make_record(b"garbage"), PermanentError("undecodable"), attempts=1)
    assert "not a valid event" in caplog.text


async def test_record_failure_keeps_a_done_job(handler: JobHandler, jobs: JobStore, blobs: BlobStore) -> None:
    event = await blob_event(blobs, png_bytes())
    assert await handler.handle(event_record(event), attempt=1) is Outcome.DONE

    await handler.record_failure(event_record(event), PermanentError("late duplicate failed"), attempts=1)

    assert (await stored_job(jobs, event)).status is JobStatus.DONE


async def test_an_image_over_the_decode_budget_is_refused_before_decoding(
    make_handler: HandlerFactory, blobs: BlobStore
) -> None:
    handler = make_handler(decode_budget_mib=16)
    event = await blob_event(blobs, encoded(Image.new("RGBA", (2000, 2000))))  # 76 MiB with working copies
    with pytest.raises(UnusableImage, match="more than the decode budget") as caught:
        await handler.handle(event_record(event), attempt=1)
    assert caught.value.code == "unsupported_image"
