"""Job databases for tests at this version's schema, as image-migrate leaves them, without migrating each one.

The migrations run once per session into a template SQLite file; each test's database is a copy of it (a file copy
costs far less than running the revisions). tests/test_migrations.py runs the real thing on empty and old databases.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import make_url, text

from core.database import create_engine
from core.schema import upgrade_sqlite


def migrated_sqlite(path: Path) -> Path:
    """A SQLite database at ``path`` at this version's schema; one already there is left as it is."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template(), path)
    return path


@functools.cache
def _template() -> Path:
    folder = tempfile.mkdtemp(prefix="schema-template-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "jobs.db"
    upgrade_sqlite(path)
    return path


async def empty_postgres_database(server_url: str, prefix: str) -> str:
    """A new, empty database named ``<prefix>_<random>`` on the server of ``server_url``; its URL. Left to be
    deleted with the session's server (a DROP DATABASE ... WITH (FORCE) lost the server mid-run)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server = create_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with server.connect() as connection:
            await connection.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await server.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)
