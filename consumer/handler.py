"""The work of one ``image_process`` record: what the consumer engine calls for each record it polls.

Delivery is at least once, so ``handle`` may see an event again (a redelivery after a rebalance, a replay, a
concurrent duplicate). The event id is the idempotency key: the processed-id row is written in the same database
transaction that marks the job done, and an event whose row exists is skipped without side effects. Everything
before that transaction may run twice and is made harmless: the keys of the result, its thumbnails and a URL job's
downloaded original are deterministic, so a re-run overwrites the same blobs with the same bytes (an original
fetched again may differ, as the URL's image may have; the job keeps the one its result was made from).

A job that asked for a completion callback gets its callback record appended (:mod:`consumer.callback_outbox`)
once it is finished, done here or failed in :meth:`JobHandler.record_failure`; a redelivery of a finished job's
event appends it again (the first append may have been lost with a crash), which the callback consumer dedups.

Failures are raised as :class:`TransientError` (retry), :class:`DependencyUnavailable` (retry until the database
or blob store answers) or :class:`PermanentError` (dead-letter); the engine picks between them without looking
at messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import logging
from typing import TypeVar

import aiokafka

from consumer.budget import DecodeBudget
from consumer.callback_outbox import CallbackOutbox
from consumer.download import ImageDownloader
from consumer.errors import (
    DependencyUnavailable,
    PermanentError,
    UndecodableEvent,
    UnsupportedEvent,
    database_call,
    describe_error,
)
from consumer.metrics import WorkerMetrics
from consumer.outcomes import Outcome
from consumer.records import coordinates
from consumer.render import Rendering, UnusableImage, render
from core import log_context, tracing
from core.blobs import BlobMissing, BlobStore, ThumbnailKind
from core.imaging import UnsupportedImage, decode_cost_bytes, open_image
from core.jobs import Cancelled, Expired, Job, JobStatus, JobStore, utc_now
from core.settings import Settings
from core.urls import redact_url
from schemas import (
    BlobSource,
    DecodedEvent,
    ErrorCode,
    EventDecodeError,
    ImageProcessV3,
    UnsupportedEventVersion,
    UrlSource,
    decode_event,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class MissingUpload(PermanentError):
    """The event names an upload the blob store does not hold."""

    code = ErrorCode.MISSING_UPLOAD


class ChecksumMismatch(PermanentError):
    """The uploaded bytes are not the ones the event describes."""

    code = ErrorCode.CHECKSUM_MISMATCH


class TamperedEvent(PermanentError):
    """The event's upload is not its own image's: someone who can write to the topic aimed it at another job's file."""

    code = ErrorCode.TAMPERED


class JobHandler:
    """Processes ``image_process`` records: fetch or read the image, filter it, store it, mark the job done.

    A ``downloader`` or ``executor`` passed in belongs to the caller; the ones created here are closed by
    :meth:`aclose`. CPU-bound work (decoding, filtering, encoding, thumbnails) runs in the executor, never on the
    loop.
    """

    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        blobs: BlobStore,
        *,
        downloader: ImageDownloader | None = None,
        executor: concurrent.futures.Executor | None = None,
        metrics: WorkerMetrics | None = None,
        outbox: CallbackOutbox | None = None,
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._blobs = blobs
        self._metrics = metrics or WorkerMetrics()
        self._budget = DecodeBudget(settings.decode_budget_mib * 2**20)
        self._owns_downloader = downloader is None
        self._downloader = downloader or ImageDownloader(settings)
        self._owns_outbox = outbox is None
        self._outbox = outbox or CallbackOutbox(settings)
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.worker_concurrency, thread_name_prefix="image-filter"
        )

    async def aclose(self) -> None:
        """Close the downloader and the callback outbox and shut down the executor, if this handler created them."""
        if self._owns_downloader:
            await self._downloader.aclose()
        if self._owns_outbox:
            await self._outbox.aclose()
        if self._owns_executor:
            # Waiting would block the loop; running tasks finish on their own, queued ones are dropped.
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def handle(self, record: aiokafka.ConsumerRecord, attempt: int) -> Outcome:
        """Process ``record`` (``attempt`` counts from 1); raises a JobError subclass on failure."""
        event = _decode(record)
        event_id = str(event.event_id)
        log_context.name_event(event_id=event_id, job_id=str(event.image_id))
        tracing.annotate(
            {"image.id": str(event.image_id), "image.event_id": event_id, "image.filter": event.filter.value}
        )
        started_at = utc_now()
        job = dataclasses.replace(
            Job.from_event(event, JobStatus.PROCESSING, attempts=attempt, now=started_at),
            started_at=started_at,
            kafka_topic=record.topic,
            kafka_partition=record.partition,
            kafka_offset=record.offset,
        )
        started = await database_call(self._jobs.mark_processing(job, event_id=event_id))
        if started is None:
            logger.info("Skipping event %s: already processed (%s)", event_id, coordinates(record))
            await self._append_callback(event)
            return Outcome.SKIPPED_DUPLICATE
        if isinstance(started, Cancelled):  # nothing fetched or read: the job's image is never touched
            logger.info("Skipping job %s: cancelled before it started (%s)", event.image_id, coordinates(record))
            return Outcome.SKIPPED_CANCELLED
        if isinstance(started, Expired):  # a replay must not bring an expired job back, nor redo its work
            logger.info("Skipping job %s: expired (retention) (%s)", event.image_id, coordinates(record))
            return Outcome.SKIPPED_EXPIRED
        if started.executions > 1:
            shown = coordinates(record)
            logger.warning("Running job %s again: execution %d (%s)", event.image_id, started.executions, shown)
            self._metrics.reexecutions.inc()

        with tracing.step("download image" if isinstance(event.source, UrlSource) else "read upload"):
            data = await self._source_bytes(event)
        loop = asyncio.get_running_loop()
        with tracing.step("apply filter"):
            async with self._budget.reserve(self._decode_cost(data)):
                rendering = await loop.run_in_executor(self._executor, render, data, event.filter)
            if self._settings.job_extra_delay_s > 0:
                await asyncio.sleep(self._settings.job_extra_delay_s)

        with tracing.step("store images"):
            result_key = await self._store(event, data, rendering)
        finished_at = utc_now()
        done = dataclasses.replace(
            job, status=JobStatus.DONE, updated_at=finished_at, finished_at=finished_at, result_key=result_key
        )
        with tracing.step("mark done"):
            completed = await database_call(self._jobs.complete(done, event_id=event_id))
        if not completed:
            logger.info("Skipping event %s: a duplicate finished first (%s)", event_id, coordinates(record))
            await self._append_callback(event)
            return Outcome.SKIPPED_DUPLICATE
        await self._append_callback(event)
        logger.info(
            "Processing image %s with filter %s... Done (%s)",
            _source_name(event),
            event.filter.value,
            coordinates(record),
        )
        return Outcome.DONE

    async def record_failure(self, record: aiokafka.ConsumerRecord, error: BaseException, attempts: int) -> None:
        """Mark the record's job failed after the engine dead-lettered it; no processed-id row, so a redrive runs.

        A value that does not decode names no job: it is only logged. Database errors propagate (as
        :class:`DependencyUnavailable` when they may pass), so the engine can decide whether to try again.
        """
        try:
            event = decode_event(record.value)
        except EventDecodeError:
            logger.warning("Dead-lettered record is not a valid event; no job to mark failed (%s)", coordinates(record))
            return
        now = utc_now()
        failed = Job.from_event(event, JobStatus.FAILED, attempts=attempts, now=now)
        failed = dataclasses.replace(failed, finished_at=now, error=describe_error(error))
        await database_call(self._jobs.mark_failed(failed))
        await self._append_callback(event)

    async def _append_callback(self, event: DecodedEvent) -> None:
        """Append the callback of the event's job if it asked for one and is finished, as the database has it (a
        failure recorded after a duplicate finished the job done leaves it done, and done is what is called back)."""
        if not isinstance(event, ImageProcessV3) or event.callback_url is None:
            return
        job = await database_call(self._jobs.get(str(event.image_id)))
        if job is not None and job.status in (JobStatus.DONE, JobStatus.FAILED):
            await self._outbox.append(job)

    async def _store(self, event: DecodedEvent, data: bytes, rendering: Rendering) -> str:
        """Store the result, both thumbnails and a URL job's original, at once; returns the result's key.

        All before the job is marked done, so a done job has them all.
        """
        image_id = str(event.image_id)
        result_key = self._blobs.result_key(image_id)
        blobs = {
            result_key: rendering.result_png,
            self._blobs.thumbnail_key(image_id, ThumbnailKind.SOURCE): rendering.source_thumbnail,
            self._blobs.thumbnail_key(image_id, ThumbnailKind.RESULT): rendering.result_thumbnail,
        }
        if isinstance(event.source, UrlSource):  # an upload is kept at its own key already
            blobs[self._blobs.original_key(image_id)] = data
        await asyncio.gather(*(self._put(key, value) for key, value in blobs.items()))
        return result_key

    async def _put(self, key: str, data: bytes) -> None:
        try:
            await self._blobs.put(key, data)
        except OSError as exc:
            raise DependencyUnavailable(f"cannot store {key}: {exc}") from exc

    def _decode_cost(self, data: bytes) -> int:
        """The image's estimated cost from its header; one that could never fit the budget is refused."""
        try:
            cost = decode_cost_bytes(open_image(data))
        except UnsupportedImage as exc:
            raise UnusableImage(f"cannot use the image: {exc}") from exc
        if cost > self._budget.total_bytes:
            raise UnusableImage(
                f"cannot use the image: decoding it needs about {cost // 2**20} MiB, more than the decode budget "
                f"(DECODE_BUDGET_MIB={self._budget.total_bytes // 2**20})"
            )
        return cost

    async def _source_bytes(self, event: DecodedEvent) -> bytes:
        source = event.source
        if isinstance(source, UrlSource):
            return await self._downloader.download(str(source.url))
        # The API stores an upload under its image's own key; an event naming any other key would read (and, with
        # a forged id, overwrite the result of) another job.
        if source.key != self._blobs.upload_key(str(event.image_id)):
            raise TamperedEvent(f"image {event.image_id} names blob {source.key}, which is not its upload")
        return await self._blob_bytes(source)

    async def _blob_bytes(self, source: BlobSource) -> bytes:
        try:
            data = await self._blobs.get(source.key)
        except (BlobMissing, IsADirectoryError, ValueError) as exc:
            raise MissingUpload(f"uploaded image {source.key} is missing from the blob store") from exc
        except OSError as exc:  # BlobStoreUnavailable too
            raise DependencyUnavailable(f"cannot read uploaded image {source.key}: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != source.sha256:
            raise ChecksumMismatch(
                f"uploaded image {source.key} does not match its checksum (sha256 {digest}, event says {source.sha256})"
            )
        return data


def _decode(record: aiokafka.ConsumerRecord) -> DecodedEvent:
    try:
        return decode_event(record.value)
    except UnsupportedEventVersion as exc:
        raise UnsupportedEvent(f"undecodable record: {exc}") from exc
    except EventDecodeError as exc:
        raise UndecodableEvent(f"undecodable record: {exc}") from exc


def _source_name(event: DecodedEvent) -> str:
    source = event.source
    return redact_url(str(source.url)) if isinstance(source, UrlSource) else source.key
