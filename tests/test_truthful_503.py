"""A 503 is the truth: its event is never processed, a keyed retry runs the job once, an outage is not a flood.

Real ``image-api`` and ``image-worker`` processes against a broker of the test's own, which is first hung
(SIGSTOP: requests reach it and get no answer) and then stopped for ``OUTAGE_S``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from core.jobs import JobStatus, JobStore
from core.settings import Settings
from producer.intake import IDEMPOTENCY_NAMESPACE
from schemas import decode_event
from scripts.kafka.local import KafkaNode
from tests.reliability.harness import free_port, wait_until_ready
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic
from tests.support.processes import ApiProcess, WorkerProcess
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually, offsets_all_committed

pytestmark = pytest.mark.integration

SEND_TIMEOUT_S = 2.0
OUTAGE_S = 30.0
# "A handful": the start of the outage, a count every 10 s, its end, and a line or two of our own.
MAX_OUTAGE_LINES = 8


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaNode]:
    node = KafkaNode(tmp_path / "kafka").start()
    try:
        yield node
    finally:
        if node.pid is not None:
            os.kill(node.pid, signal.SIGCONT)
        node.stop()


@pytest.fixture
async def pipeline(own_broker: KafkaNode, tmp_path: Path) -> AsyncIterator[tuple[Settings, ApiProcess, WorkerProcess]]:
    settings = worker_test_settings(
        own_broker.bootstrap_servers, tmp_path, send_timeout_s=SEND_TIMEOUT_S, retry_after_s=1
    )
    api = ApiProcess(settings, tmp_path / "api.log", free_port())
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        yield settings, api, worker
    finally:
        api.stop()
        worker.stop()


def outage_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]


@pytest.fixture
async def jobs(pipeline: tuple[Settings, ApiProcess, WorkerProcess]) -> AsyncIterator[JobStore]:
    store = JobStore.from_url(pipeline[0].database_url)
    try:
        yield store
    finally:
        await store.close()  # also when the test failed: a store left open warns in whichever test runs next


async def test_a_503_is_never_processed_and_a_keyed_retry_runs_once(
    own_broker: KafkaNode, pipeline: tuple[Settings, ApiProcess, WorkerProcess], images: ImageServer, jobs: JobStore
) -> None:
    settings, api, worker = pipeline
    await wait_until_ready(api.base_url)
    unkeyed_path, keyed_path = f"/img/{uuid.uuid4().int % 1000}.png", "/img/7.png"
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        warm_up = await client.post("/images", json={"url": images.url("/img/1.png"), "filter": "invert"})
        assert warm_up.status_code == 202
        await eventually(lambda: _status_is(jobs, warm_up.json()["id"], JobStatus.DONE), what="the warm-up job done")

        # The broker hangs: the transactions of these requests cannot commit in time.
        assert own_broker.pid is not None
        os.kill(own_broker.pid, signal.SIGSTOP)
        unkeyed = await client.post("/images", json={"url": images.url(unkeyed_path), "filter": "sepia"})
        keyed_job = {"url": images.url(keyed_path), "filter": "blur"}
        keyed = await client.post("/images", json=keyed_job, headers={"Idempotency-Key": "order-7"})
        assert (unkeyed.status_code, keyed.status_code) == (503, 503), (unkeyed.text, keyed.text)

        # Then it is gone for OUTAGE_S, while clients keep asking.
        os.kill(own_broker.pid, signal.SIGCONT)
        api_lines_before, worker_lines_before = len(outage_lines(api.log())), len(outage_lines(worker.log()))
        await asyncio.to_thread(own_broker.stop)
        during = []
        async with asyncio.timeout(OUTAGE_S + 10):
            loop = asyncio.get_running_loop()
            ends = loop.time() + OUTAGE_S
            while loop.time() < ends:
                answer = await client.post("/images", json=keyed_job, headers={"Idempotency-Key": "order-7"})
                during.append(answer.status_code)
                await asyncio.sleep(1.0)  # a client's pace during the outage, not synchronisation
        api_outage = outage_lines(api.log())[api_lines_before:]
        worker_outage = outage_lines(worker.log())[worker_lines_before:]
        await asyncio.to_thread(own_broker.start)

        # A retry with the same key, once the broker is back: the id derived from the key, accepted once.
        retried = await _post_until_accepted(client, keyed_job, "order-7")
        other = await client.post(
            "/images", json={**keyed_job, "filter": "sepia"}, headers={"Idempotency-Key": "order-7"}
        )
    keyed_id = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, "image:order-7"))
    assert retried.json()["id"] == keyed_id
    assert other.status_code == 409, other.text
    assert set(during) == {503}, during

    await eventually(lambda: _status_is(jobs, keyed_id, JobStatus.DONE), what="the keyed job done", timeout_s=90)
    await eventually(lambda: offsets_all_committed(settings), what="the worker read everything committed", timeout_s=90)

    committed = await read_topic(settings, settings.images_topic, committed_only=True)
    urls = [
        str(event.source.url) for event in map(decode_event, (r.value for r in committed)) if event.source.kind == "url"
    ]
    assert images.url(unkeyed_path) not in urls, "the event of a 503 was committed"
    assert images.hits[unkeyed_path] == 0, "the job of a 503 ran"
    assert images.hits[keyed_path] == 1, "the keyed job ran exactly once"
    assert len(api_outage) <= MAX_OUTAGE_LINES, "\n".join(api_outage)
    assert len(worker_outage) <= MAX_OUTAGE_LINES, "\n".join(worker_outage)


async def _post_until_accepted(client: httpx.AsyncClient, job: dict[str, str], key: str) -> httpx.Response:
    async with asyncio.timeout(90):
        while True:
            response = await client.post("/images", json=job, headers={"Idempotency-Key": key})
            if response.status_code == 202:
                return response
            assert response.status_code == 503, response.text
            await asyncio.sleep(0.5)  # the client's back-off


async def _status_is(jobs: JobStore, image_id: str, status: JobStatus) -> bool:
    job = await jobs.get(image_id)
    return job is not None and job.status is status
