"""Bulk reads and deletes on the processed-ids table, for tools that replay events (``image-replay reset``).

Workers touch one event id at a time (:class:`core.jobs.JobStore`); a replay asks about thousands at once, so
ids go to the database in chunks that stay below SQLite's bound-parameter limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator

from sqlalchemy import delete, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.database import DatabaseMissing, create_engine
from core.schema import require_current
from core.tables import jobs_table, processed_events_table

CHUNK_SIZE = 500


class NoJobDatabase(Exception):
    """The database named has no job tables: it is not the one the workers use (a tool never creates one)."""


@contextlib.asynccontextmanager
async def workers_database(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the workers' existing database; :class:`NoJobDatabase` if it is missing or has no job tables,
    :class:`core.schema.SchemaMismatch` if it is at another schema than this version's.

    A replay planned against an empty database would report "nothing processed" and be wrong without a word.
    """
    try:
        engine = create_engine(database_url, create=False)
    except DatabaseMissing as exc:
        raise NoJobDatabase(f"{exc}: set DATABASE_URL to the workers' database") from None
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        if not {jobs_table.name, processed_events_table.name} <= tables:
            raise NoJobDatabase(
                f"{engine.url.render_as_string(hide_password=True)} has no job tables: "
                "set DATABASE_URL to the workers' database"
            )
        await require_current(engine)
        yield engine
    finally:
        await engine.dispose()


async def processed_among(engine: AsyncEngine, event_ids: Iterable[str]) -> set[str]:
    """The ids among ``event_ids`` whose work is done (a replayed one would be skipped as a duplicate)."""
    column = processed_events_table.c.event_id
    found: set[str] = set()
    async with engine.connect() as connection:
        for chunk in _chunks(event_ids):
            rows = await connection.execute(select(column).where(column.in_(chunk)))
            found.update(str(row[0]) for row in rows)
    return found


async def forget_processed(engine: AsyncEngine, event_ids: Iterable[str]) -> int:
    """Delete the processed marks of ``event_ids`` in one transaction, so their next delivery runs the job again.

    Returns how many marks were deleted. All or nothing: a failure leaves every mark in place.
    """
    column = processed_events_table.c.event_id
    deleted = 0
    async with engine.begin() as connection:
        for chunk in _chunks(event_ids):
            result = await connection.execute(delete(processed_events_table).where(column.in_(chunk)))
            deleted += result.rowcount
    return deleted


def _chunks(event_ids: Iterable[str]) -> Iterator[list[str]]:
    ordered = sorted(set(event_ids))
    for start in range(0, len(ordered), CHUNK_SIZE):
        yield ordered[start : start + CHUNK_SIZE]
