"""Opening the job database: SQLite by default, PostgreSQL when the URL says so.

Users write plain URLs (``sqlite:///data/images.db``, ``postgresql://user:pass@host/db``); this module picks
the async driver, so one setting serves the API, the workers and the tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}

SQLITE_BUSY_TIMEOUT_MS = 5000

# PostgreSQL SQLSTATEs worth another try: connection exceptions (08), insufficient resources (53), operator
# intervention such as a restart (57), serialization failure, deadlock, lock not available.
_TRANSIENT_SQLSTATE_CLASSES: Final = frozenset({"08", "53", "57"})
_TRANSIENT_SQLSTATES: Final = frozenset({"40001", "40P01", "55P03"})


class DatabaseMissing(Exception):
    """The SQLite file a tool was pointed at does not exist; creating it would only hide a wrong DATABASE_URL."""


def async_database_url(database_url: str) -> URL:
    """``database_url`` with the async driver this project uses for its backend; ``~`` in a SQLite path is the
    user's home, so the default database does not depend on the working directory."""
    url = make_url(database_url)
    backend = url.drivername.split("+", 1)[0]
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"DATABASE_URL: unsupported database {backend!r}; use sqlite:/// or postgresql://")
    url = url.set(drivername=_ASYNC_DRIVERS[backend])
    if backend == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).expanduser().absolute()))
    return url


def _create_async_engine(url: URL, **options: Any) -> AsyncEngine:
    # Looked up on the module at each call: tracing (core/tracing.py) wraps it there to trace the engine's SQL.
    engine: AsyncEngine = sqlalchemy_asyncio.create_async_engine(url, **options)
    return engine


def create_engine(database_url: str, *, create: bool = True) -> AsyncEngine:
    """An engine for ``database_url``; for SQLite, WAL mode is switched on and, with ``create``, the file's folder
    is created. Without ``create`` a missing SQLite file raises :class:`DatabaseMissing`.

    WAL plus a busy timeout lets the API read while a worker writes; a write that still finds the file locked
    raises, and the worker treats that as a transient error.
    """
    url = async_database_url(database_url)
    if url.get_backend_name() != "sqlite":
        return _create_async_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        if not create and not Path(url.database).is_file():
            raise DatabaseMissing(f"the SQLite database {url.database} does not exist")
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = _create_async_engine(url)
    event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def is_transient_database_error(error: BaseException) -> bool:
    """Whether a database error may pass: a locked SQLite file, a lost or restarting PostgreSQL, a serialization
    failure or deadlock. Constraint violations and SQL errors are bugs and are not retried as transient."""
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, sqlalchemy.exc.OperationalError):
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and (
            sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
        )
    # SQLAlchemy wraps driver errors in DBAPIError; a refused connection may surface as a bare OSError.
    return isinstance(error, sqlalchemy.exc.TimeoutError | OSError)
