"""Alembic's environment: migrations run on the connection :mod:`core.schema` hands in (an async engine's, through
``run_sync``), never on a URL of their own, so image-migrate, the demo and the tests share one code path."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from core.tables import metadata


def run_migrations() -> None:
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("migrate with image-migrate (core.schema.upgrade), not the alembic command")
    # Batch operations are how SQLite alters a table (it copies it); PostgreSQL runs the same ones as plain ALTERs.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
