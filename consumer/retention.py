"""The retention sweep: deletes finished jobs' files after ``RESULT_TTL`` and their rows after ``JOB_TTL``.

It runs beside the poll loop in every worker (:class:`consumer.worker.Worker` starts and stops it), but only the
worker holding the database lease ``retention`` sweeps (:mod:`core.leases`): one sweep per interval across the
group, and when that worker stops it gives the lease up so another takes over at its next interval (one that dies
loses it when it lapses, after three intervals). A pass does bounded work (``RETENTION_BATCH_SIZE`` jobs a step);
while passes come out full, the next follows at once rather than an interval later, so a backlog is worked off. It
never blocks the image lane: it only awaits the database and the blob store. Files go first, then the mark that
they are gone, so a pass cut off in between deletes them again next time; a blob already missing is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from consumer.metrics import WorkerMetrics
from core.blobs import BlobStore, ThumbnailKind
from core.jobs import JobStore, utc_now
from core.leases import Lease
from core.retention import DueFiles, RetentionStore
from core.settings import Settings, ttl_seconds

logger = logging.getLogger(__name__)

LEASE_NAME = "retention"
LEASE_INTERVALS = 3  # a lease outlives two missed renewals: a slow pass does not hand the sweep to another worker
BLOB_DELETES_AT_ONCE = 16  # jobs whose blobs are deleted concurrently (each several requests on S3)


class RetentionSweeper:
    """Sweeps expired jobs every ``RETENTION_SWEEP_INTERVAL_S`` while this process holds the retention lease."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        blobs: BlobStore,
        metrics: WorkerMetrics,
        *,
        holder: str | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._store = RetentionStore(jobs.engine)
        self._blobs = blobs
        self._metrics = metrics
        self._clock = clock
        # Unique per sweeper, also for several workers in one process (tests) or a pid reused after a restart.
        holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        duration_s = LEASE_INTERVALS * settings.retention_sweep_interval_s
        self.lease = Lease(jobs.engine, LEASE_NAME, holder, duration_s, clock)
        self._stopping = asyncio.Event()
        # Whether the last pass left work due: one of its steps handled a whole RETENTION_BATCH_SIZE.
        self.behind = False

    @property
    def enabled(self) -> bool:
        """Whether anything ever expires (not with ``RESULT_TTL=never`` and ``TOMBSTONE_TTL=never``)."""
        return (
            ttl_seconds(self._settings.result_ttl) is not None or ttl_seconds(self._settings.tombstone_ttl) is not None
        )

    async def run(self) -> None:
        """Sweep now and every interval until :meth:`stop`; a failed pass is logged and tried at the next one."""
        if not self.enabled:
            return
        try:
            while not self._stopping.is_set():
                try:
                    await self.sweep_once()
                except (OSError, SQLAlchemyError) as exc:  # the database or the blob store: it may pass
                    logger.warning("retention sweep failed (%r); next try in %.0f s", exc, self._interval_s)
                    self.behind = False
                if self.behind:  # a step was full: more is due now, and waiting an interval would never catch up
                    await asyncio.sleep(0)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._stopping.wait()
        finally:
            with contextlib.suppress(OSError, SQLAlchemyError):  # unreleased, it lapses by itself
                await self.lease.release()

    def stop(self) -> None:
        """Ask :meth:`run` to end (after the pass under way) and give the lease up."""
        self._stopping.set()

    async def sweep_once(self) -> Counter[str] | None:
        """One pass if this process holds (or can take) the lease: what it removed, by kind; None if another
        process holds it."""
        if not await self.lease.acquire():
            return None
        now = self._clock()
        removed, files_of = await self._expire_files(now)  # first: a row is deleted only once its files are
        removed["job"] += await self._expire_rows(now)
        removed["tombstone"] += await self._prune_tombstones(now)
        batch = self._settings.retention_batch_size
        self.behind = batch in (files_of, removed["job"], removed["tombstone"])
        for kind, count in removed.items():
            if count:
                self._metrics.retention_removed.labels(kind=kind).inc(count)
        self._metrics.retention_sweeps.inc()
        if any(removed.values()):
            shown = ", ".join(f"{count} {kind}" for kind, count in sorted(removed.items()) if count)
            logger.info("retention sweep removed %s", shown)
        return removed

    async def _expire_files(self, now: dt.datetime) -> tuple[Counter[str], int]:
        """Delete the files of the jobs due; what was removed by kind, and of how many jobs."""
        removed: Counter[str] = Counter()
        ttl_s = ttl_seconds(self._settings.result_ttl)
        if ttl_s is None:
            return removed, 0
        finished_before = now - dt.timedelta(seconds=ttl_s)
        due = await self._store.files_due(finished_before, self._settings.retention_batch_size)
        for start in range(0, len(due), BLOB_DELETES_AT_ONCE):
            chunk = due[start : start + BLOB_DELETES_AT_ONCE]
            for kinds in await asyncio.gather(*(self._delete_files(job) for job in chunk)):
                removed.update(kinds)
        await self._store.mark_files_expired([job.image_id for job in due], finished_before, now)
        return removed, len(due)

    async def _expire_rows(self, now: dt.datetime) -> int:
        ttl_s = ttl_seconds(self._settings.job_ttl)
        if ttl_s is None:
            return 0
        finished_before = now - dt.timedelta(seconds=ttl_s)
        return len(await self._store.expire_rows(finished_before, now, self._settings.retention_batch_size))

    async def _prune_tombstones(self, now: dt.datetime) -> int:
        ttl_s = ttl_seconds(self._settings.tombstone_ttl)
        if ttl_s is None:
            return 0
        expired_before = now - dt.timedelta(seconds=ttl_s)
        return await self._store.prune_tombstones(expired_before, self._settings.retention_batch_size)

    @property
    def _interval_s(self) -> float:
        return self._settings.retention_sweep_interval_s

    async def _delete_files(self, job: DueFiles) -> Counter[str]:
        """Delete what the job may have stored, by its deterministic keys (never a key a row names: an event could
        have named another job's); returns the kinds of what was there."""
        blobs, image_id = self._blobs, job.image_id
        keys = {
            blobs.result_key(image_id): "result",
            blobs.thumbnail_key(image_id, ThumbnailKind.SOURCE): "thumbnail",
            blobs.thumbnail_key(image_id, ThumbnailKind.RESULT): "thumbnail",
        }
        if job.uploaded:
            keys[blobs.upload_key(image_id)] = "upload"
        if job.from_url:
            keys[blobs.original_key(image_id)] = "original"
        found = await asyncio.gather(*(self._delete(key) for key in keys))
        return Counter(kind for (key, kind), was_there in zip(keys.items(), found, strict=True) if was_there)

    async def _delete(self, key: str) -> bool:
        """Delete ``key``; whether it was there (for the metric: a blob never stored is not counted)."""
        if not await self._blobs.exists(key):
            return False
        await self._blobs.delete(key)
        return True
