"""Group commit of accepted jobs' rows: one transaction for all the rows waiting, not one per request.

Each accepted request writes its job row after the broker's ack. Written one transaction each, concurrent
requests queue for SQLite's single write lock (sleeping in its busy handler) or pay a commit round trip each on
PostgreSQL: under load that was the API's largest cost and its worst tail. One writer instead takes every row
waiting, writes them in one transaction and wakes their requests. Durability is the same: a request still
learns that its row is committed before it answers (within its deadline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from core.batching import Batcher
from core.jobs import Job, JobStore
from producer.metrics import ApiMetrics, Outcome

logger = logging.getLogger(__name__)

MAX_ROWS_PER_TRANSACTION: Final = 500


class AcceptedRows:
    """Writes accepted jobs' rows in batches; :meth:`write` returns when its row is committed or given up on."""

    def __init__(self, jobs: JobStore, metrics: ApiMetrics | None = None) -> None:
        self._jobs = jobs
        self._metrics = metrics or ApiMetrics()
        self._batcher = Batcher(self._write, max_batch=MAX_ROWS_PER_TRANSACTION, name="accepted job rows")

    def write(self, job: Job) -> asyncio.Future[None]:
        """Queue ``job``'s row; the future is done once the row's transaction ended, committed or not.

        A failed write is logged here, not raised: the event is in the log, so the job is accepted either way
        and its worker writes the row when it picks the job up.
        """
        return self._batcher.submit(job)

    async def aclose(self, timeout_s: float) -> None:
        """Write the rows still waiting (for up to ``timeout_s``), then stop the writer."""
        await self._batcher.aclose(timeout_s)

    async def _write(self, batch: list[Job]) -> list[None]:
        started = time.perf_counter()
        try:
            await self._jobs.record_accepted(*batch)
        except Exception:  # whatever it was, the writer lives on for the next rows
            self._metrics.job_rows_written(Outcome.FAILED, len(batch), time.perf_counter() - started)
            ids = ", ".join(job.image_id for job in batch[:5])
            logger.warning(
                "%d accepted job(s) (%s%s) have no row yet; their workers will write them",
                len(batch),
                ids,
                ", ..." if len(batch) > 5 else "",
                exc_info=True,
            )
        else:
            self._metrics.job_rows_written(Outcome.COMMITTED, len(batch), time.perf_counter() - started)
        return [None] * len(batch)
