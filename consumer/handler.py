"""The work of one ``image_process`` record: what the consumer engine calls for each record it polls.

Delivery is at least once, so ``handle`` may see an event again (a redelivery after a rebalance, a replay, a
concurrent duplicate). The event id is the idempotency key: the processed-id row is written in the same database
transaction that marks the job done, and an event whose row exists is skipped without side effects. Everything
before that transaction may run twice and is made harmless: the result key is deterministic, so a re-run
overwrites the same file with the same bytes.

Failures are raised as :class:`TransientError` (retry), :class:`DependencyUnavailable` (retry until the database
or blob store answers) or :class:`PermanentError` (dead-letter); the engine picks between them without looking
at messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import hashlib
import io
import logging
from collections.abc import Awaitable
from enum import StrEnum
from typing import Any, Final, TypeVar

import aiokafka
import sqlalchemy.exc
from PIL import Image, ImageOps

from consumer.errors import DependencyUnavailable, PermanentError
from consumer.fetch import ImageFetcher
from consumer.filters import apply_filter
from core.blobs import BlobStore
from core.imaging import UnsupportedImage, open_image
from core.jobs import Job, JobStatus, JobStore, utc_now
from core.settings import Settings
from schemas import BlobSource, EventDecodeError, FilterName, ImageProcessEvent, UrlSource, decode_event

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ERROR_CHARS: Final = 500

# PostgreSQL SQLSTATEs worth another try: connection exceptions (08), insufficient resources (53), operator
# intervention such as a restart (57), serialization failure, deadlock, lock not available.
_TRANSIENT_SQLSTATE_CLASSES: Final = frozenset({"08", "53", "57"})
_TRANSIENT_SQLSTATES: Final = frozenset({"40001", "40P01", "55P03"})


class Outcome(StrEnum):
    """How ``handle`` finished; either way the record's offset may be committed."""

    DONE = "done"
    SKIPPED_DUPLICATE = "skipped_duplicate"


class JobHandler:
    """Processes ``image_process`` records: fetch or read the image, filter it, store it, mark the job done.

    A ``fetcher`` or ``executor`` passed in belongs to the caller; the ones created here are closed by
    :meth:`aclose`. CPU-bound work (decoding, filtering, PNG encoding) runs in the executor, never on the loop.
    """

    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        blobs: BlobStore,
        *,
        fetcher: ImageFetcher | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._blobs = blobs
        self._owns_fetcher = fetcher is None
        self._fetcher = fetcher or ImageFetcher(settings)
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.worker_concurrency, thread_name_prefix="image-filter"
        )

    async def aclose(self) -> None:
        """Close the fetcher and shut down the executor, if this handler created them."""
        if self._owns_fetcher:
            await self._fetcher.aclose()
        if self._owns_executor:
            # Waiting would block the loop; running tasks finish on their own, queued ones are dropped.
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def handle(self, record: aiokafka.ConsumerRecord, attempt: int) -> Outcome:
        """Process ``record`` (``attempt`` counts from 1); raises a JobError subclass on failure."""
        event = _decode(record)
        event_id = str(event.event_id)
        started_at = utc_now()
        job = dataclasses.replace(
            _job_from_event(event, JobStatus.PROCESSING, attempts=attempt, now=started_at), started_at=started_at
        )
        if not await _database(self._jobs.mark_processing(job, event_id=event_id)):
            logger.info(
                "Skipping event %s: already processed (topic=%s partition=%s offset=%s key=%s)",
                event_id,
                *_coordinates(record),
            )
            return Outcome.SKIPPED_DUPLICATE

        data = await self._source_bytes(event)
        loop = asyncio.get_running_loop()
        png = await loop.run_in_executor(self._executor, render_png, data, event.filter)
        if self._settings.job_extra_delay_s > 0:
            await asyncio.sleep(self._settings.job_extra_delay_s)

        result_key = self._blobs.result_key(str(event.image_id))
        try:
            await self._blobs.put(result_key, png)
        except OSError as exc:
            raise DependencyUnavailable(f"cannot store result {result_key}: {exc}") from exc

        finished_at = utc_now()
        done = dataclasses.replace(
            job, status=JobStatus.DONE, updated_at=finished_at, finished_at=finished_at, result_key=result_key
        )
        if not await _database(self._jobs.complete(done, event_id=event_id)):
            logger.info(
                "Skipping event %s: a duplicate finished first (topic=%s partition=%s offset=%s key=%s)",
                event_id,
                *_coordinates(record),
            )
            return Outcome.SKIPPED_DUPLICATE
        logger.info(
            "Processing image %s with filter %s... Done (topic=%s partition=%s offset=%s key=%s)",
            _source_name(event),
            event.filter.value,
            *_coordinates(record),
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
            logger.warning(
                "Dead-lettered record is not a valid event; no job to mark failed "
                "(topic=%s partition=%s offset=%s key=%s)",
                *_coordinates(record),
            )
            return
        now = utc_now()
        failed = _job_from_event(event, JobStatus.FAILED, attempts=attempts, now=now)
        failed = dataclasses.replace(failed, finished_at=now, error=describe_error(error))
        await _database(self._jobs.mark_failed(failed))

    async def _source_bytes(self, event: ImageProcessEvent) -> bytes:
        source = event.source
        if isinstance(source, UrlSource):
            return await self._fetcher.fetch(str(source.url))
        return await self._blob_bytes(source)

    async def _blob_bytes(self, source: BlobSource) -> bytes:
        try:
            data = await self._blobs.get(source.key)
        except (FileNotFoundError, IsADirectoryError, ValueError) as exc:
            raise PermanentError(f"uploaded image {source.key} is missing from the blob store") from exc
        except OSError as exc:
            raise DependencyUnavailable(f"cannot read uploaded image {source.key}: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != source.sha256:
            raise PermanentError(
                f"uploaded image {source.key} does not match its checksum (sha256 {digest}, event says {source.sha256})"
            )
        return data


def render_png(data: bytes, filter_name: FilterName) -> bytes:
    """Decode ``data`` as an allowed image, apply ``filter_name`` and encode PNG (CPU-bound: run in an executor).

    Undecodable, disguised (e.g. EPS or PDF), truncated and oversized images raise :class:`PermanentError`.
    """
    try:
        image = open_image(data)
        _check_pixels(image)
        image.load()
        upright = ImageOps.exif_transpose(image)
    except UnsupportedImage as exc:
        raise PermanentError(f"cannot use the image: {exc}") from exc
    except Exception as exc:
        # Pillow's decoders raise many types on malformed input (OSError for truncation, SyntaxError, ValueError,
        # struct.error, IndexError, ...): whatever the bytes did, they will do it again.
        raise PermanentError(f"cannot decode the image: {_describe(exc)}") from exc
    result = apply_filter(filter_name, upright)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    return buffer.getvalue()


def _check_pixels(image: Image.Image) -> None:
    """Refuse images above Pillow's limit once more, without relying on open_image's warning filter.

    That filter is process-global state which other threads of the executor may be changing at the same moment.
    """
    limit_px = Image.MAX_IMAGE_PIXELS
    if limit_px is not None and image.width * image.height > limit_px:
        raise UnsupportedImage(f"image has too many pixels ({image.width}x{image.height} > {limit_px})")


def describe_error(error: BaseException) -> str:
    """``ErrorClass: message``, short enough for the job row and a DLQ header."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def is_transient_database_error(error: BaseException) -> bool:
    """Whether a database error may pass: a locked SQLite file, a lost or restarting PostgreSQL, a serialization
    failure or deadlock. Constraint violations and SQL errors are bugs and are not retried as transient."""
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, sqlalchemy.exc.OperationalError):
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and (
            sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
        )
    # SQLAlchemy wraps driver errors in DBAPIError; a refused connection may surface as a bare OSError.
    return isinstance(error, sqlalchemy.exc.TimeoutError | OSError)


async def _database(operation: Awaitable[T]) -> T:
    """Await a JobStore call, turning database errors that may pass into :class:`DependencyUnavailable`."""
    try:
        return await operation
    except Exception as exc:
        if is_transient_database_error(exc):
            raise DependencyUnavailable(f"database unavailable: {describe_error(exc)}") from exc
        raise


def _decode(record: aiokafka.ConsumerRecord) -> ImageProcessEvent:
    try:
        return decode_event(record.value)
    except EventDecodeError as exc:
        raise PermanentError(f"undecodable record: {exc}") from exc


def _job_from_event(event: ImageProcessEvent, status: JobStatus, *, attempts: int, now: dt.datetime) -> Job:
    """The job as the worker knows it from the event; the API's request fingerprint is left for the API."""
    source = event.source
    return Job(
        image_id=str(event.image_id),
        status=status,
        filter=event.filter.value,
        source_url=str(source.url) if isinstance(source, UrlSource) else None,
        blob_key=source.key if isinstance(source, BlobSource) else None,
        request_fingerprint=None,
        requested_at=event.requested_at,
        updated_at=now,
        attempts=attempts,
    )


def _source_name(event: ImageProcessEvent) -> str:
    source = event.source
    return str(source.url) if isinstance(source, UrlSource) else source.key


def _coordinates(record: aiokafka.ConsumerRecord) -> tuple[Any, ...]:
    key = record.key.decode(errors="replace") if isinstance(record.key, bytes) else record.key
    return (record.topic, record.partition, record.offset, key)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
