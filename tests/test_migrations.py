"""Schema migrations on each supported database: from empty, from databases made before migrations, and the
refusal of every process to run on a database at another schema."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Column, Connection, DateTime, Integer, MetaData, String, Table, Text, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.database import create_engine
from core.jobs import Job, JobStatus, JobStore, utc_now
from core.processed import workers_database
from core.schema import (
    MIGRATIONS_DIR,
    SchemaMismatch,
    SchemaState,
    head_revision,
    require_current,
    schema_state,
    upgrade,
)
from core.tables import jobs_table, metadata
from tests.support.database import empty_postgres_database

BIN = Path(sys.executable).parent
UNREACHABLE_KAFKA = "127.0.0.1:9"  # the worker must refuse before it tries Kafka
OLD_JOB = "0b7c0000-0000-4000-8000-000000000000"


@pytest.fixture
async def empty_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database of its own with no tables, on the backend of ``database_url``. PostgreSQL ones are left on the
    session's server, deleted with it (a DROP DATABASE ... WITH (FORCE) here lost the server mid-run)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    yield await empty_postgres_database(database_url, "migrations")


@pytest.fixture
async def engine(empty_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(empty_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def schema_differences(engine: AsyncEngine, tables: MetaData = metadata) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match ``tables`` (by default core/tables.py;
    nothing, if equal)."""
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), tables))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Take the database down to ``revision`` in one transaction (image-migrate never does; the revisions can)."""

    def run(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            await connection.exec_driver_sql("BEGIN")  # as core.schema.upgrade: DDL inside the transaction
        await connection.run_sync(run)


def run(command: list[str], database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which(command[0], path=str(BIN))
    assert executable is not None, f"{command[0]} is not installed"
    environment = os.environ | {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE_KAFKA} | env
    return subprocess.run(
        [executable, *command[1:]], capture_output=True, text=True, timeout=60, env=environment, check=False
    )


def release_tables(*, executions: bool, owner_and_keys: bool = False) -> MetaData:
    """The tables a release before migrations made with create_all: the first had no ``executions``, and only the
    last had ``owner`` and api_keys (the baseline revision's tables)."""
    old = MetaData()
    optional: list[Column[Any]] = [Column("executions", Integer, nullable=False, server_default="0")] * executions
    optional += [Column("owner", String(36))] * owner_and_keys
    Table(
        "jobs",
        old,
        Column("image_id", String(36), primary_key=True),
        Column("status", String(16), nullable=False),
        Column("filter", String(32), nullable=False),
        Column("source_url", Text),
        Column("blob_key", String(512)),
        Column("request_fingerprint", String(64)),
        Column("requested_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("started_at", DateTime(timezone=True)),
        Column("finished_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False),
        Column("error", Text),
        Column("result_key", String(512)),
        *optional,
    )
    Table(
        "processed_events",
        old,
        Column("event_id", String(36), primary_key=True),
        Column("image_id", String(36), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )
    if owner_and_keys:
        Table(
            "api_keys",
            old,
            Column("key_id", String(36), primary_key=True),
            Column("name", String(128), nullable=False, unique=True),
            Column("secret_sha256", String(64), nullable=False, unique=True),
            Column("roles", String(64), nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("revoked_at", DateTime(timezone=True)),
        )
    return old


LAST_RELEASE = release_tables(executions=True, owner_and_keys=True)


async def make_old_database(engine: AsyncEngine, tables: MetaData) -> None:
    """Create ``tables`` as create_all did, with one finished job in them."""
    async with engine.begin() as connection:
        await connection.run_sync(tables.create_all)
        now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        await connection.execute(
            tables.tables["jobs"]
            .insert()
            .values(image_id=OLD_JOB, status="done", filter="blur", requested_at=now, updated_at=now, attempts=1)
        )


async def test_from_empty_the_migrations_make_the_tables_of_core_tables(engine: AsyncEngine) -> None:
    assert (await schema_state(engine)).problem() is not None

    before, after = await upgrade(engine)

    assert (before.revision, before.legacy) == (None, False)
    assert after.revision == head_revision()
    assert await schema_differences(engine) == []
    await require_current(engine)
    again, _ = await upgrade(engine)  # a second run finds it current and changes nothing
    assert again.current


async def test_kafka_coordinates_revision_goes_down_and_up_again_keeping_the_jobs(engine: AsyncEngine) -> None:
    await upgrade(engine)
    store = JobStore(engine)
    now = utc_now()
    job = Job(
        image_id=OLD_JOB,
        status=JobStatus.PROCESSING,
        filter="blur",
        source_url="https://example.com/a.png",
        blob_key=None,
        request_fingerprint=None,
        requested_at=now,
        updated_at=now,
        kafka_topic="images",
        kafka_partition=2,
        kafka_offset=2**40,  # beyond 32 bits: BigInteger
    )
    assert await store.mark_processing(job, event_id=OLD_JOB)
    assert await store.get(OLD_JOB) == dataclasses.replace(job, executions=1)

    await downgrade(engine, "0001")

    assert await schema_differences(engine, LAST_RELEASE) == []
    async with engine.connect() as connection:
        assert (await connection.execute(select(jobs_table.c.image_id))).scalars().all() == [OLD_JOB]
    await upgrade(engine)
    assert await schema_differences(engine) == []
    stored = await store.get(OLD_JOB)
    assert stored is not None
    assert (stored.status, stored.kafka_topic, stored.kafka_partition, stored.kafka_offset) == (
        JobStatus.PROCESSING,
        None,
        None,
        None,
    )


async def test_retention_revision_goes_down_and_up_again_keeping_the_jobs(engine: AsyncEngine) -> None:
    await upgrade(engine)
    store = JobStore(engine)
    now = utc_now()
    job = Job(
        image_id=OLD_JOB,
        status=JobStatus.DONE,
        filter="blur",
        source_url="https://example.com/a.png",
        blob_key=None,
        request_fingerprint=None,
        requested_at=now,
        updated_at=now,
        finished_at=now,
        files_expired_at=now,
    )
    await store.record_accepted(job)
    assert await store.get(OLD_JOB) == job

    await downgrade(engine, "0002")

    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert (await connection.execute(select(jobs_table.c.image_id))).scalars().all() == [OLD_JOB]
    assert "expired_jobs" not in tables
    assert "leases" not in tables
    await upgrade(engine)
    assert await schema_differences(engine) == []
    assert await store.get(OLD_JOB) == dataclasses.replace(job, files_expired_at=None)


async def test_concurrent_upgrades_on_postgresql_take_turns(postgres_url: str) -> None:
    """Several hosts running image-migrate at once on PostgreSQL (SQLite is one machine's): one migrates, the others
    find the schema current."""
    empty_url = await empty_postgres_database(postgres_url, "migrations")
    engines = [create_engine(empty_url) for _ in range(3)]
    try:
        answers = await asyncio.gather(*(upgrade(engine) for engine in engines), return_exceptions=True)
        outcomes = [answer for answer in answers if not isinstance(answer, BaseException)]
        assert len(outcomes) == len(engines), answers
        assert all(after.current for _, after in outcomes)
        assert sum(1 for before, _ in outcomes if not before.current) >= 1
        assert await schema_differences(engines[0]) == []
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.parametrize(
    "release",
    [
        pytest.param(LAST_RELEASE, id="last-release"),
        pytest.param(release_tables(executions=True), id="with-executions"),
        pytest.param(release_tables(executions=False), id="first-release"),
    ],
)
async def test_image_migrate_adopts_a_database_create_all_made(
    engine: AsyncEngine, empty_url: str, release: MetaData
) -> None:
    await make_old_database(engine, release)
    with pytest.raises(SchemaMismatch, match="predates schema migrations"):
        await require_current(engine)

    migrated = run(["image-migrate"], empty_url)

    assert migrated.returncode == 0, migrated.stderr
    assert f"migrated from its pre-migration tables to schema {head_revision()}" in migrated.stdout
    assert await schema_differences(engine) == []
    await require_current(engine)
    store = JobStore(engine)
    job = await store.get(OLD_JOB)
    assert job is not None
    assert (job.status, job.attempts, job.executions, job.owner) == (JobStatus.DONE, 1, 0, None)
    accepted = run(["image-keys", "list"], empty_url)
    assert (accepted.returncode, accepted.stderr) == (0, "")


async def test_check_says_where_the_schema_is(engine: AsyncEngine, empty_url: str) -> None:
    await make_old_database(engine, LAST_RELEASE)

    behind = run(["image-migrate", "--check"], empty_url)
    assert behind.returncode == 1
    assert behind.stderr == (
        f"image-migrate: the job database predates schema migrations, this version needs schema {head_revision()}: "
        "run image-migrate (or make migrate)\n"
    )

    assert run(["image-migrate"], empty_url).returncode == 0
    current = run(["image-migrate", "--check"], empty_url)
    assert current.returncode == 0
    assert f"is at schema {head_revision()} (current)" in current.stdout


def test_check_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "jobs.db"

    result = run(["image-migrate", "--check"], f"sqlite:///{missing}")

    assert result.returncode == 1
    assert result.stderr == f"image-migrate: the SQLite database {missing} does not exist\n"
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    "command", [["image-keys", "list"], ["image-worker"], ["image-api", "--port", "0"]], ids=lambda argv: argv[0]
)
async def test_a_process_refuses_a_database_that_is_behind(empty_url: str, command: list[str]) -> None:
    result = run(command, empty_url)

    assert result.returncode != 0
    assert result.stderr == (
        f"{command[0]}: the job database has no schema yet, this version needs schema {head_revision()}: "
        "run image-migrate (or make migrate)\n"
    )


async def _stamp(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision})


@pytest.mark.parametrize("command", [["image-worker"], ["image-migrate"]], ids=lambda argv: argv[0])
async def test_a_database_a_newer_release_migrated_is_refused(
    engine: AsyncEngine, empty_url: str, command: list[str]
) -> None:
    await upgrade(engine)
    await _stamp(engine, "9999")

    result = run(command, empty_url)

    assert result.returncode != 0
    assert result.stderr == (
        f"{command[0]}: the job database is at schema 9999, newer than this version knows ({head_revision()}): "
        "a newer release migrated it; run that release\n"
    )
    assert (await schema_state(engine)).revision == "9999", "image-migrate never downgrades"


async def test_image_replay_refuses_a_workers_database_at_another_schema(engine: AsyncEngine, empty_url: str) -> None:
    await make_old_database(engine, LAST_RELEASE)

    with pytest.raises(SchemaMismatch, match="predates schema migrations"):
        async with workers_database(empty_url):
            pass


def test_a_database_at_an_older_revision_is_named() -> None:
    head = head_revision()
    state = SchemaState(revision=head, head="9999", legacy=False)  # as a later version will see this one's

    assert state.problem() == (
        f"the job database is at schema {head}, this version needs schema 9999: run image-migrate (or make migrate)"
    )
