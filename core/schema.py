"""The job database's schema version: where it is, bringing it to this version's (Alembic), refusing any other.

Only ``image-migrate`` (and the demo's and the tests' set-up) changes the schema, never a process as it starts:
API processes and workers start together, and neither a race of them nor an old release's process should apply a
schema change. Each process checks at start and refuses, in one line that names the command, a database that is
behind (empty, from before migrations, or at an older revision) or ahead (migrated by a newer release).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from core.database import create_engine
from core.migrations import legacy

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATE_COMMAND = "run image-migrate (or make migrate)"
VERSION_TABLE = "alembic_version"
# Any fixed number: an advisory lock is known by it alone ("image-pipeline migrations", in ASCII hex, shortened).
MIGRATION_LOCK_KEY = 0x696D6167_65706970


class SchemaMismatch(Exception):
    """The database is not at the schema this version needs; the process must not start. Says what to run."""


class MigrationError(Exception):
    """The database cannot be migrated as it is (newer than this version, or not a job database)."""


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database is: its revision (None without alembic_version) and whether it holds pre-migration tables."""

    revision: str | None
    head: str
    legacy: bool

    @property
    def current(self) -> bool:
        return self.revision == self.head

    @property
    def known(self) -> bool:
        """Whether this version knows the revision (an unknown one was made by a newer release)."""
        return self.revision is None or self.revision in _revisions()

    def problem(self) -> str | None:
        """Why a process of this version must not run on the database, in one line; None when it may."""
        if self.current:
            return None
        needs = f"this version needs schema {self.head}"
        if self.revision is None and self.legacy:
            return f"the job database predates schema migrations, {needs}: {MIGRATE_COMMAND}"
        if self.revision is None:
            return f"the job database has no schema yet, {needs}: {MIGRATE_COMMAND}"
        if not self.known:
            return (
                f"the job database is at schema {self.revision}, newer than this version knows ({self.head}): "
                "a newer release migrated it; run that release"
            )
        return f"the job database is at schema {self.revision}, {needs}: {MIGRATE_COMMAND}"


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


@functools.cache
def _revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _script().walk_revisions())


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The schema revision this version of the code reads and writes."""
    head = _script().get_current_head()
    assert head is not None, "the migrations have one head"
    return head


def state_of(connection: Connection) -> SchemaState:
    """The schema state of the database behind ``connection`` (a sync one; see :func:`schema_state`)."""
    revision = MigrationContext.configure(connection).get_current_revision()
    tables = set(inspect(connection).get_table_names())
    return SchemaState(revision=revision, head=head_revision(), legacy=legacy.is_legacy(tables))


async def schema_state(engine: AsyncEngine) -> SchemaState:
    async with engine.connect() as connection:
        return await connection.run_sync(state_of)


async def require_current(engine: AsyncEngine) -> None:
    """Raise :class:`SchemaMismatch` unless the database is at this version's schema (every process's start)."""
    problem = (await schema_state(engine)).problem()
    if problem is not None:
        raise SchemaMismatch(problem)


async def require_current_at(database_url: str) -> None:
    """:func:`require_current` on a connection of its own, for entry points that check before they build anything."""
    engine = create_engine(database_url)
    try:
        await require_current(engine)
    finally:
        await engine.dispose()


def upgrade_connection(connection: Connection) -> tuple[SchemaState, SchemaState]:
    """Bring the database to head on ``connection`` (in its transaction); returns the states before and after.

    A database from before migrations is completed to the baseline and stamped with it first (see
    :mod:`core.migrations.legacy`). A database at a revision this version does not know is left alone. On
    PostgreSQL, concurrent runs (several hosts starting at once) take turns: the second finds the schema current.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    before = state_of(connection)
    if not before.known:
        raise MigrationError(before.problem() or "")
    if before.current:
        return before, before
    config = _config(connection)
    if before.revision is None and before.legacy:
        try:
            legacy.complete_to_baseline(connection)
        except legacy.NotAJobDatabase as exc:
            raise MigrationError(str(exc)) from None
        command.stamp(config, legacy.BASELINE)
    command.upgrade(config, "head")
    return before, state_of(connection)


def upgrade_sqlite(path: Path) -> None:
    """Migrate the SQLite file at ``path`` (created if missing) without an event loop: for set-ups that are not
    async, such as the tests' template database and the benchmarks' fresh ones."""
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            upgrade_connection(connection)
    finally:
        engine.dispose()


async def upgrade(engine: AsyncEngine) -> tuple[SchemaState, SchemaState]:
    """Migrate the database of ``engine`` to this version's schema in one transaction (see
    :func:`upgrade_connection`)."""
    async with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            # pysqlite runs DDL outside a transaction unless one is open: open it, so a failed step undoes them all.
            await connection.exec_driver_sql("BEGIN")
        return await connection.run_sync(upgrade_connection)
