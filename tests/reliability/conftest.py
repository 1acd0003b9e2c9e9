"""The reliability suite: real processes under injected faults, each scenario printing one line of figures.

Every test here is marked ``reliability``. The short form (default) is what CI runs; ``--long`` runs the long
form (more events, longer churn) for release checks. Figures are collected and printed in the terminal summary,
so they appear in CI's output whatever pytest's capture mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from scripts.kafka.local import KafkaCluster
from tests.reliability.harness import Scale, free_port
from tests.support.processes import ApiProcess, ServiceProcess, WorkerProcess
from tests.support.settings import worker_test_settings

pytestmark = pytest.mark.reliability

BROKER_START_TIMEOUT_S = 90.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "reliability" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> Scale:
    """Sizes of the scenario: short for CI, long with ``--long``."""
    return Scale.LONG if request.config.getoption("--long") else Scale.SHORT


@pytest.fixture
def reliability_settings(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for real processes: 6 partitions, fast retries, loopback images allowed; blobs in a folder, or in
    the test S3 server with ``--blob-store=s3``."""
    store: dict[str, object] = {}
    if request.config.getoption("--blob-store") == "s3":
        store = request.getfixturevalue("s3").settings()
    return worker_test_settings(
        kafka_bootstrap,
        tmp_path,
        topic_partitions=6,
        max_attempts=3,
        retry_backoff_max_s=0.5,
        fetch_timeout_s=5.0,
        shutdown_timeout_s=15.0,
        send_timeout_s=3.0,
        **store,
    )


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    """Processes a test starts; whatever is still running at the end is killed."""
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.stop()


StartWorker = Callable[[Settings], WorkerProcess]
StartApi = Callable[[Settings], ApiProcess]


@pytest.fixture
def start_worker(processes: list[ServiceProcess], tmp_path: Path) -> StartWorker:
    """Start an ``image-worker`` with ``settings``; it is killed at the end of the test if still running."""

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(processes)}.log")
        processes.append(worker)
        return worker

    return start


@pytest.fixture
def start_api(processes: list[ServiceProcess], tmp_path: Path) -> StartApi:
    """Start an ``image-api`` on a free port with ``settings`` (wait for it with ``harness.wait_until_ready``)."""

    def start(settings: Settings) -> ApiProcess:
        api = ApiProcess(settings, tmp_path / f"api-{len(processes)}.log", free_port())
        processes.append(api)
        return api

    return start


@pytest.fixture
async def own_cluster(tmp_path: Path) -> AsyncIterator[KafkaCluster]:
    """Three brokers of this test's own (RF 3 and min ISR 2 by default), started; stopped at the end."""
    cluster = KafkaCluster(tmp_path / "cluster", size=3)
    await asyncio.to_thread(cluster.start, BROKER_START_TIMEOUT_S)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)
