"""The console's browser tests run against the real thing: an ``image-api`` and an ``image-worker`` process on
the test broker, with API keys on, and one headless Chromium shared by the module's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver

from core.api_keys import ApiKeyStore, Role
from core.jobs import JobStore
from core.settings import Settings
from tests.console.browser import chromium, screenshot_folder
from tests.reliability.harness import free_port, wait_until_ready
from tests.support.image_server import ImageServer, image_server
from tests.support.processes import ApiProcess, WorkerProcess
from tests.support.settings import worker_test_settings


@dataclass(frozen=True)
class Console:
    """A running pipeline and the keys to its console."""

    settings: Settings
    base_url: str
    user_key: str  # submit and read
    admin_key: str
    images: ImageServer
    screenshots: Path

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@pytest.fixture(scope="module")
def console(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console")
    settings = worker_test_settings(kafka_bootstrap, folder, auth_disabled=False, max_attempts=1)
    user_key, admin_key = asyncio.run(_keys(settings))
    api = ApiProcess(settings, folder / "api.log", free_port())
    worker = WorkerProcess(settings, folder / "worker.log")
    try:
        with image_server() as images:
            asyncio.run(wait_until_ready(api.base_url))
            yield Console(settings, api.base_url, user_key, admin_key, images, screenshot_folder(folder / "shots"))
    finally:
        worker.stop()
        api.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


async def _keys(settings: Settings) -> tuple[str, str]:
    jobs = JobStore.from_url(settings.database_url)
    try:
        store = ApiKeyStore(jobs.engine)
        _, user = await store.create("console-user", frozenset({Role.SUBMIT, Role.READ}))
        _, admin = await store.create("console-admin", frozenset({Role.ADMIN}))
    finally:
        await jobs.close()
    return user, admin
