"""How the handler words failures and which database errors it treats as passing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy.exc

from consumer.errors import DependencyUnavailable, describe_error
from consumer.handler import JobHandler
from core.database import is_transient_database_error
from core.file_blobs import FileBlobStore
from core.jobs import JobStore
from tests.support.events import event_record, url_event
from tests.support.settings import make_settings


def test_error_text_is_short() -> None:
    assert describe_error(ValueError("x" * 1000)).startswith("ValueError: xxx")
    assert len(describe_error(ValueError("x" * 1000))) == 500
    assert describe_error(TimeoutError()) == "TimeoutError"


# --- database errors --------------------------------------------------------------------------------------------------


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database is locked")), True),
        (sqlalchemy.exc.DBAPIError("SELECT", {}, Exception("gone"), connection_invalidated=True), True),
        (sqlalchemy.exc.DBAPIError("UPDATE", {}, _PgError("40001")), True),
        (sqlalchemy.exc.DBAPIError("UPDATE", {}, _PgError("40P01")), True),
        (sqlalchemy.exc.DBAPIError("UPDATE", {}, _PgError("57P01")), True),
        (sqlalchemy.exc.IntegrityError("INSERT", {}, _PgError("23505")), False),
        (sqlalchemy.exc.ProgrammingError("SELECT", {}, _PgError("42P01")), False),
        (ConnectionRefusedError(111, "refused"), True),
        (ValueError("bug"), False),
    ],
)
def test_database_error_classification(error: BaseException, transient: bool) -> None:
    assert is_transient_database_error(error) is transient


async def test_unreachable_database_is_transient(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = JobStore.from_url(f"postgresql://user:pw@127.0.0.1:{port}/images")
    handler = JobHandler(make_settings("localhost:9092", tmp_path), unreachable, FileBlobStore(tmp_path / "blobs"))
    try:
        with pytest.raises(DependencyUnavailable, match="database unavailable"):
            await handler.handle(event_record(url_event("https://example.com/a.png")), attempt=1)
    finally:
        await handler.aclose()
        await unreachable.close()
