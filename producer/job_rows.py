"""Group commit of accepted jobs' rows: one transaction for all the rows waiting, not one per request.

Each accepted request writes its job row after the broker's ack. Written one transaction each, concurrent
requests queue for SQLite's single write lock (sleeping in its busy handler) or pay a commit round trip each on
PostgreSQL: under load that was the API's largest cost and its worst tail. One writer task instead takes every
row waiting, writes them in one transaction and wakes their requests. Durability is the same: a request still
learns that its row is committed before it answers (within its deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from core.jobs import Job, JobStore

logger = logging.getLogger(__name__)

MAX_ROWS_PER_TRANSACTION: Final = 500


class AcceptedRows:
    """Writes accepted jobs' rows in batches; :meth:`write` returns when its row is committed or given up on."""

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs
        self._waiting: list[tuple[Job, asyncio.Future[None]]] = []  # not yet taken by the writer
        self._unfinished: set[asyncio.Future[None]] = set()  # waiting or being written
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def write(self, job: Job) -> asyncio.Future[None]:
        """Queue ``job``'s row; the future is done once the row's transaction ended, committed or not.

        A failed write is logged here, not raised: the event is in the log, so the job is accepted either way
        and its worker writes the row when it picks the job up.
        """
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((job, future))
        self._unfinished.add(future)
        future.add_done_callback(self._unfinished.discard)
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name="accepted job rows")
        return future

    async def aclose(self, timeout_s: float) -> None:
        """Write the rows still waiting (for up to ``timeout_s``), then stop the writer."""
        if self._unfinished:
            await asyncio.wait(self._unfinished, timeout=timeout_s)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _write_batches(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch = self._waiting[:MAX_ROWS_PER_TRANSACTION]
                del self._waiting[:MAX_ROWS_PER_TRANSACTION]
                await self._write(batch)

    async def _write(self, batch: list[tuple[Job, asyncio.Future[None]]]) -> None:
        try:
            await self._jobs.record_accepted(*(job for job, _ in batch))
        except Exception:  # whatever it was, the writer lives on for the next rows
            ids = ", ".join(job.image_id for job, _ in batch[:5])
            logger.warning(
                "%d accepted job(s) (%s%s) have no row yet; their workers will write them",
                len(batch),
                ids,
                ", ..." if len(batch) > 5 else "",
                exc_info=True,
            )
        finally:
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
