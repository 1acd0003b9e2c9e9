"""What retention does to the database: which finished jobs are due, marking their files gone, deleting their rows
for tombstones, and pruning old tombstones.

A job expires in two steps, both counted from its ``finished_at`` and only once it is final (done, failed,
cancelled): after ``RESULT_TTL`` its files are deleted (by the sweep, through the blob store) and the row says so in
``files_expired_at``; after ``JOB_TTL`` its row and its processed-id rows are deleted and a tombstone keeps its id
and owner, so ``GET`` answers 410 and a replayed event is skipped rather than run again. Tombstones go after
``TOMBSTONE_TTL``. Every statement takes at most ``limit`` jobs: a pass does bounded work, the next one goes on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from core.jobs import JobStatus
from core.tables import callback_attempts_table, expired_jobs_table, jobs_table, processed_events_table

FINAL_STATUSES = (JobStatus.DONE.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


@dataclass(frozen=True, slots=True)
class DueFiles:
    """A finished job whose files are due: what the sweep needs to name its blobs."""

    image_id: str
    uploaded: bool  # an upload is kept at its own key
    from_url: bool  # a URL job's downloaded original is kept once it is done


@dataclass(frozen=True, slots=True)
class ExpiredJob:
    """The tombstone of a job whose row was deleted."""

    image_id: str
    owner: str | None
    expired_at: dt.datetime


class RetentionStore:
    """The retention statements on the job database (the schema of ``image-migrate``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    async def files_due(self, finished_before: dt.datetime, limit: int) -> list[DueFiles]:
        """Up to ``limit`` final jobs finished before ``finished_before`` whose files are still kept, oldest first."""
        statement = (
            select(jobs_table.c.image_id, jobs_table.c.blob_key, jobs_table.c.source_url)
            .where(_files_due(finished_before))
            .order_by(jobs_table.c.finished_at)
            .limit(limit)
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [DueFiles(row.image_id, row.blob_key is not None, row.source_url is not None) for row in rows]

    async def mark_files_expired(self, image_ids: Sequence[str], finished_before: dt.datetime, now: dt.datetime) -> int:
        """Record that the jobs' files are deleted; returns how many rows said so.

        Called after the files are gone, so a sweep cut off in between deletes them again next time (a missing blob
        is fine). A job a redrive started again meanwhile is no longer final and keeps no mark.
        """
        if not image_ids:
            return 0
        statement = (
            update(jobs_table)
            .where(jobs_table.c.image_id.in_(image_ids), _files_due(finished_before))
            .values(files_expired_at=now)
        )
        async with self.engine.begin() as connection:
            return (await connection.execute(statement)).rowcount

    async def expire_rows(self, finished_before: dt.datetime, now: dt.datetime, limit: int) -> list[str]:
        """Delete up to ``limit`` rows of jobs finished before ``finished_before`` whose files are gone, with their
        processed-id rows and callback attempts, leaving a tombstone of each; returns their ids. One transaction: a
        job is either still there or a tombstone, never neither."""
        due = (
            select(jobs_table.c.image_id)
            .where(
                jobs_table.c.files_expired_at.is_not(None),
                jobs_table.c.status.in_(FINAL_STATUSES),
                jobs_table.c.finished_at < finished_before,
            )
            .order_by(jobs_table.c.finished_at)
            .limit(limit)
        )
        remove = (
            delete(jobs_table)
            .where(jobs_table.c.image_id.in_(due.scalar_subquery()))
            .returning(jobs_table.c.image_id, jobs_table.c.owner)
        )
        async with self.engine.begin() as connection:
            removed = (await connection.execute(remove)).all()
            if not removed:
                return []
            ids = [row.image_id for row in removed]
            await connection.execute(delete(processed_events_table).where(processed_events_table.c.image_id.in_(ids)))
            await connection.execute(delete(callback_attempts_table).where(callback_attempts_table.c.image_id.in_(ids)))
            tombstones = [{"image_id": row.image_id, "owner": row.owner, "expired_at": now} for row in removed]
            await connection.execute(self._insert_tombstones(), tombstones)
        return ids

    async def prune_tombstones(self, expired_before: dt.datetime, limit: int) -> int:
        """Forget up to ``limit`` tombstones older than ``expired_before``; returns how many."""
        due = select(expired_jobs_table.c.image_id).where(expired_jobs_table.c.expired_at < expired_before).limit(limit)
        statement = delete(expired_jobs_table).where(expired_jobs_table.c.image_id.in_(due.scalar_subquery()))
        async with self.engine.begin() as connection:
            return (await connection.execute(statement)).rowcount

    async def expired_job(self, image_id: str) -> ExpiredJob | None:
        """The tombstone of ``image_id``, if its row expired (and the tombstone is not pruned yet)."""
        async with self.engine.connect() as connection:
            row = (await connection.execute(_TOMBSTONE, {"image_id": image_id})).first()
        if row is None:
            return None
        expired_at = row.expired_at if row.expired_at.tzinfo else row.expired_at.replace(tzinfo=dt.UTC)
        return ExpiredJob(row.image_id, row.owner, expired_at)

    def _insert_tombstones(self) -> postgresql.Insert | sqlite.Insert:
        # A tombstone already there (a job id used again after its row expired) keeps its first date.
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        return insert(expired_jobs_table).on_conflict_do_nothing(index_elements=["image_id"])


_TOMBSTONE = select(expired_jobs_table).where(expired_jobs_table.c.image_id == bindparam("image_id"))


def _files_due(finished_before: dt.datetime) -> ColumnElement[bool]:
    return and_(
        jobs_table.c.files_expired_at.is_(None),
        jobs_table.c.status.in_(FINAL_STATUSES),
        jobs_table.c.finished_at < finished_before,
    )
