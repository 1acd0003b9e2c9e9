"""The API's batched SQLite statements on a plain ``sqlite3`` connection, on the event loop when they need not wait.

Through SQLAlchemy on aiosqlite every DBAPI call (cursor, execute, fetch, close, commit, the pool's rollback on
return) is a hop to aiosqlite's thread and back with SQLAlchemy's execution machinery around it; even one hop
per batch to a thread of our own cost a GIL hand-off each way. For the rows of accepted jobs and the
Idempotency-Key look-ups that was about 40 % of ``POST /images``'s CPU. Here the statement SQLAlchemy compiled
once runs as one ``executemany`` (or one ``SELECT``) with SQLAlchemy's own type processors for the values, on the
event loop unless it would have to wait. Same file, and the async engine's journal mode and synchronous level.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

from core.database import SQLITE_BUSY_TIMEOUT_MS

T = TypeVar("T")

logger = logging.getLogger(__name__)

_DIALECT = sqlite.dialect()


def is_sqlite_file(url: URL) -> bool:
    """Whether ``url`` names a SQLite database in a file (one a second connection sees the same data of)."""
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


class SqliteLane:
    """A plain ``sqlite3`` connection on the event loop for batched statements, and a thread for when it must wait.

    A statement here never waits on the event loop: the connection has no busy timeout, so a write that finds the
    write lock taken (a worker is committing) or a read that finds the log being reset fails at once, and is run
    again in the lane's thread, whose connection waits up to ``SQLITE_BUSY_TIMEOUT_MS``. Commits in WAL mode with
    ``synchronous=NORMAL`` append to the log without an fsync; the fsyncs of checkpoints are kept off the loop
    too: the loop's connection does not checkpoint, the thread does, every ``CHECKPOINT_EVERY`` commits.
    """

    CHECKPOINT_EVERY = 500

    def __init__(self, path: str) -> None:
        self._path = path
        self._here: sqlite3.Connection | None = None  # opened and used on the event loop's thread only
        self._there: sqlite3.Connection | None = None  # opened and used in the lane's thread only
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-lane")
        self._commits = 0
        self._checkpoint: asyncio.Future[None] | None = None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in a transaction: committed when it returns, rolled back when it raises."""
        try:
            if self._here is None:
                self._here = self._connect(busy_timeout_ms=0, wal_autocheckpoint=0)
            with self._here:
                result = work(self._here)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise _as_sqlalchemy_error(exc) from exc
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._run_there, work)
        except sqlite3.Error as exc:
            raise _as_sqlalchemy_error(exc) from exc
        self._commits += 1
        if self._commits % self.CHECKPOINT_EVERY == 0 and (self._checkpoint is None or self._checkpoint.done()):
            self._checkpoint = asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint_there)
        return result

    async def close(self) -> None:
        if self._here is not None:
            self._here.close()
            self._here = None
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_there)
        self._thread.shutdown(wait=False)

    def _connect(
        self, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, wal_autocheckpoint: int = 1000
    ) -> sqlite3.Connection:
        # mode=rw: a missing file is an error here, as with the async engine, not a new empty database. WAL mode
        # is the file's own (the async engine sets it); asking for it again would need a lock a writer may hold.
        uri = pathlib.Path(self._path).as_uri() + "?mode=rw"
        connection = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000)
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(f"PRAGMA wal_autocheckpoint={wal_autocheckpoint:d}")
        return connection

    def _connected_there(self) -> sqlite3.Connection:
        if self._there is None:
            self._there = self._connect()
        return self._there

    def _run_there(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with self._connected_there() as connection:
                return work(connection)
        except sqlite3.Error as exc:
            raise _as_sqlalchemy_error(exc) from exc

    def _checkpoint_there(self) -> None:
        try:
            self._connected_there().execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:  # the next one, or any other connection's, will do it
            logger.warning("SQLite checkpoint failed: %s", exc)

    def _close_there(self) -> None:
        if self._there is not None:
            self._there.close()
            self._there = None


def _as_sqlalchemy_error(error: sqlite3.Error) -> Exception:
    # As SQLAlchemy raises it (OperationalError for a locked file...): callers tell 503s from bugs by its class.
    return DBAPIError.instance(None, None, error, sqlite3.Error)


class CompiledWrite:
    """A SQLAlchemy statement compiled once for SQLite, and its parameters in the order it binds them."""

    def __init__(self, statement: UpdateBase, table: Table) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        names = compiled.positiontup or []
        self._binders = [(name, _bind_processor(table, name)) for name in names]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] if bind is None else bind(values[name]) for name, bind in self._binders)


class CompiledRead:
    """``SELECT <every column of table> WHERE <key> IN (...)`` for SQLite, its rows turned into mappings with
    SQLAlchemy's result processors (a SQLite datetime is text until they parse it)."""

    def __init__(self, table: Table, key: str) -> None:
        self._columns = [column.name for column in table.columns]
        # Names from the table definition; the keys themselves are bound.
        self._prefix = f"SELECT {', '.join(self._columns)} FROM {table.name} WHERE {key} IN "  # noqa: S608
        self._readers = [_result_processor(table, name) for name in self._columns]

    def execute(self, connection: sqlite3.Connection, keys: Sequence[str]) -> list[dict[str, Any]]:
        placeholders = ", ".join("?" * len(keys))
        rows = connection.execute(f"{self._prefix}({placeholders})", tuple(keys)).fetchall()
        return [
            {
                name: value if read is None or value is None else read(value)
                for name, read, value in zip(self._columns, self._readers, row, strict=True)
            }
            for row in rows
        ]


def _bind_processor(table: Table, name: str) -> Callable[[Any], Any] | None:
    return table.c[name].type.dialect_impl(_DIALECT).bind_processor(_DIALECT)


def _result_processor(table: Table, name: str) -> Callable[[Any], Any] | None:
    return table.c[name].type.dialect_impl(_DIALECT).result_processor(_DIALECT, None)
