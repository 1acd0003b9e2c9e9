"""Turning a validated request into exactly one accepted job.

Order matters: the upload (if any) is stored, then the event is appended and acked, and only then is the job
recorded and 202 returned. A failure before the ack leaves no job behind; the client gets 503 and retries. The
whole of it answers within ``SEND_TIMEOUT_S``: a job row that a busy database has not taken by then is written in
the background (the job is accepted once the event is acked; a worker writes the row too when it starts).

With an ``Idempotency-Key`` the image id and event id are derived from the key (and the request), so a retry
names the same job: when it was already accepted the API answers from the database without a second event;
when an earlier attempt timed out but reached Kafka after all, the retry's event carries the same event id and
the workers process it once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from pydantic import HttpUrl, TypeAdapter
from sqlalchemy.exc import SQLAlchemyError

from core import tracing
from core.batching import Batcher
from core.blobs import BlobStore
from core.jobs import Job, JobStatus, JobStore, utc_now
from core.settings import Settings
from producer.job_rows import AcceptedRows
from producer.metrics import ApiMetrics
from producer.publisher import BrokerUnavailable, EventPublisher, OutcomeUnknown, Record
from schemas import BlobSource, FilterName, ImageProcessEvent, UrlSource, encode_event, event_headers
from schemas.events import EncodedImageUrl

logger = logging.getLogger(__name__)

# Fixed namespace for ids derived from idempotency keys: changing it would break retries across a deploy.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d3a52-8c1e-4f7a-9a36-2b8e5d0c7e41")
# An upload with no job row this old belongs to no job: its event was never committed. (A committed event's row
# is written at once by the API, or by the worker that picks the event up.)
ORPHAN_UPLOAD_AGE_S = 24 * 3600.0
UPLOADS_PREFIX = "uploads"
SWEEP_INTERVAL_S = 3600.0
# How long shutdown waits for job rows still being written in the background.
ROW_WRITES_CLOSE_TIMEOUT_S = 10.0
MAX_LOOKUPS_PER_STATEMENT = 500


class IdempotencyKeyReused(Exception):
    """The key was already used for a different request: the client has a bug, not a retry."""


@dataclass(frozen=True, slots=True)
class Upload:
    """An uploaded image that passed validation, in a spooled file the request owns (read from its start)."""

    file: BinaryIO
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Acceptance:
    job: Job
    replayed: bool


class JobIntake:
    """Accepts image jobs: stores uploads, publishes ``image_process`` events, records jobs."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        blobs: BlobStore,
        publisher: EventPublisher,
        *,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._blobs = blobs
        self._publisher = publisher
        self._rows = AcceptedRows(jobs, metrics)
        # Idempotency-Keys of concurrent requests are looked up together: one statement, not one per request.
        self._lookups: Batcher[str, Job | None] = Batcher(
            jobs.get_each, max_batch=MAX_LOOKUPS_PER_STATEMENT, name="idempotency key look-ups"
        )

    async def aclose(self) -> None:
        """Wait (bounded) for job rows still being written after their 202."""
        await self._lookups.aclose(ROW_WRITES_CLOSE_TIMEOUT_S)
        await self._rows.aclose(ROW_WRITES_CLOSE_TIMEOUT_S)

    async def submit(
        self,
        source: str | Upload,
        image_filter: FilterName,
        idempotency_key: str | None = None,
        *,
        owner: str | None = None,
        callback_url: str | None = None,
    ) -> Acceptance:
        """Accept one job for API key ``owner``; raises ``BrokerUnavailable`` (answer 503) or
        ``IdempotencyKeyReused`` (answer 409).

        Idempotency-Keys are scoped to the owner: ids derive from the key's server-side id as well, so nobody can
        compute the id of another client's job from a guessable Idempotency-Key, nor claim that key first.
        """
        deadline = time.monotonic() + self._settings.send_timeout_s
        fingerprint = _fingerprint(source, image_filter, callback_url)
        if idempotency_key is None:
            image_id, event_id = uuid.uuid4(), uuid.uuid4()
        else:
            scoped = idempotency_key if owner is None else f"{owner}:{idempotency_key}"
            image_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"image:{scoped}")
            event_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"event:{scoped}:{fingerprint}")
            existing = await self._lookups.submit(str(image_id))
            if existing is not None:
                # A row without a fingerprint comes from an event older than v2: nothing to compare with.
                if existing.request_fingerprint not in (None, fingerprint):
                    raise IdempotencyKeyReused("Idempotency-Key was already used for a different request")
                return Acceptance(existing, replayed=True)

        if isinstance(source, Upload):
            blob_key = self._blobs.upload_key(str(image_id))
            await self._blobs.put_file(blob_key, source.file)
            event_source: UrlSource | BlobSource = BlobSource(
                key=blob_key, size_bytes=source.size_bytes, sha256=source.sha256
            )
        else:
            event_source = UrlSource.model_validate({"url": source})

        now = utc_now()
        event = ImageProcessEvent(
            event_id=event_id,
            image_id=image_id,
            source=event_source,
            filter=image_filter,
            requested_at=now,
            request_fingerprint=fingerprint,
            owner=owner,
            callback_url=_callback_url(callback_url),
        )
        topic, key = self._settings.images_topic, str(image_id).encode()
        try:
            with tracing.producing(topic, key=key) as trace_headers:
                await self._publisher.publish(
                    topic, key=key, value=encode_event(event), headers=[*event_headers(event), *trace_headers]
                )
        except BrokerUnavailable as exc:
            # No event will ever refer to this upload. (A keyed one may be shared by a concurrent retry with the
            # same key, and one of an unknown outcome may be referred to after all: those are left to the sweep.)
            keyed_or_unknown = idempotency_key is not None or isinstance(exc, OutcomeUnknown)
            if isinstance(event_source, BlobSource) and not keyed_or_unknown:
                await self._forget_upload(event_source.key)
            raise
        job = Job.from_event(event, JobStatus.QUEUED, now=now)
        written = self._rows.write(job)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await asyncio.shield(written)
        except TimeoutError:
            logger.info("job %s accepted; its row is still being written", image_id)
        return Acceptance(job, replayed=False)

    async def submit_urls(
        self, requests: Sequence[tuple[str, FilterName, str | None]], *, owner: str | None = None
    ) -> list[Job]:
        """Accept one URL job per ``(url, filter, callback_url)`` for API key ``owner``, all in one transaction:
        every job is accepted, or ``BrokerUnavailable`` is raised (answer 503) and none will ever be processed."""
        deadline = time.monotonic() + self._settings.send_timeout_s
        now = utc_now()
        events = [
            ImageProcessEvent(
                event_id=uuid.uuid4(),
                image_id=uuid.uuid4(),
                source=UrlSource.model_validate({"url": url}),
                filter=image_filter,
                requested_at=now,
                request_fingerprint=_fingerprint(url, image_filter, callback_url),
                owner=owner,
                callback_url=_callback_url(callback_url),
            )
            for url, image_filter, callback_url in requests
        ]
        topic = self._settings.images_topic
        with tracing.producing(topic, count=len(events)) as trace_headers:
            await self._publisher.publish_all(
                [
                    Record(
                        topic,
                        str(event.image_id).encode(),
                        encode_event(event),
                        [*event_headers(event), *trace_headers],
                    )
                    for event in events
                ]
            )
        accepted = [Job.from_event(event, JobStatus.QUEUED, now=now) for event in events]
        written = asyncio.gather(*(self._rows.write(job) for job in accepted))
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await asyncio.shield(written)
        except TimeoutError:
            logger.info("%d job(s) accepted; their rows are still being written", len(accepted))
        return accepted

    async def sweep_orphan_uploads(self) -> int:
        """Delete uploads older than ``ORPHAN_UPLOAD_AGE_S`` that no job names (the API died between storing one
        and answering); returns how many."""
        removed = 0
        for key in await self._blobs.keys_older_than(UPLOADS_PREFIX, ORPHAN_UPLOAD_AGE_S):
            if await self._jobs.get(key.removeprefix(f"{UPLOADS_PREFIX}/")) is None:
                await self._blobs.delete(key)
                removed += 1
        if removed:
            logger.info("removed %d upload(s) that never became a job", removed)
        return removed

    async def sweep_orphan_uploads_forever(self) -> None:
        """Sweep now and then every ``SWEEP_INTERVAL_S``; a failed sweep is logged and tried again later."""
        while True:
            try:
                await self.sweep_orphan_uploads()
            except (OSError, SQLAlchemyError) as exc:
                logger.warning("sweeping orphan uploads failed (%r); next try in %.0f s", exc, SWEEP_INTERVAL_S)
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def _forget_upload(self, key: str) -> None:
        try:
            await self._blobs.delete(key)
        except OSError as exc:
            logger.warning("could not remove upload %s of a refused job (%r); the sweep will", key, exc)


def _fingerprint(source: str | Upload, image_filter: FilterName, callback_url: str | None) -> str:
    described = f"upload:{source.sha256}" if isinstance(source, Upload) else f"url:{source}"
    # Without a callback the fingerprint is the one earlier versions computed, so their keys' retries still match.
    callback = "" if callback_url is None else f"\ncallback:{callback_url}"
    return hashlib.sha256(f"{described}\n{image_filter.value}{callback}".encode()).hexdigest()


_EVENT_URL: TypeAdapter[HttpUrl] = TypeAdapter(EncodedImageUrl)


def _callback_url(url: str | None) -> HttpUrl | None:
    return None if url is None else _EVENT_URL.validate_python(url)
