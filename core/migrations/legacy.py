"""Databases from before migrations: what ``create_all`` made at start-up, with no alembic_version table.

Releases before migrations created missing tables and added missing columns each time a process started, so such
a database has one of three shapes: the first release's (jobs and processed_events), the next one's (jobs gained
``executions``), the last one's (jobs gained ``owner``, and api_keys came). The baseline revision is the last
shape. Adoption checks the two original tables are there, does what that last release's start-up would have done
(add the missing columns, create api_keys), and stamps the baseline; later revisions then run as anywhere else.

Why not revisions for the two columns: a database could be adopted at any of the three shapes, which are not one
line of revisions to stamp (a baseline with optional steps would be), and the last shape is what every database
made by a fresh install of the last release is, so it is the honest baseline.
"""

from __future__ import annotations

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Connection, DateTime, Integer, String, inspect

BASELINE = "0001"
ORIGINAL_TABLES = ("jobs", "processed_events")  # what every release before migrations created


class NotAJobDatabase(Exception):
    """The database has some tables of the pipeline but not the ones every release made: not something to adopt."""


def is_legacy(tables: set[str]) -> bool:
    """Whether a database without alembic_version holds tables a release before migrations made."""
    return any(table in tables for table in ORIGINAL_TABLES)


def complete_to_baseline(connection: Connection) -> list[str]:
    """Bring a pre-migration database to the baseline's shape; returns what was added (empty when nothing was).

    The definitions are the baseline's, frozen here: later changes to ``core/tables.py`` belong to new revisions.
    """
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    missing = [table for table in ORIGINAL_TABLES if table not in tables]
    if missing:
        raise NotAJobDatabase(
            f"the database has {', '.join(sorted(tables & {'jobs', 'processed_events', 'api_keys'}))} but not "
            f"{', '.join(missing)}: not a job database this version can adopt; check DATABASE_URL"
        )
    operations = Operations(MigrationContext.configure(connection))
    added = []
    columns = {column["name"] for column in inspector.get_columns("jobs")}
    for column in (
        Column("executions", Integer, nullable=False, server_default="0"),
        Column("owner", String(36), nullable=True),
    ):
        if column.name not in columns:
            operations.add_column("jobs", column)
            added.append(f"jobs.{column.name}")
    if "api_keys" not in tables:
        operations.create_table(
            "api_keys",
            Column("key_id", String(36), primary_key=True),
            Column("name", String(128), nullable=False, unique=True),
            Column("secret_sha256", String(64), nullable=False, unique=True),
            Column("roles", String(64), nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("revoked_at", DateTime(timezone=True), nullable=True),
        )
        added.append("api_keys")
    return added
