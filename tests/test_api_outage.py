"""The API with the broker gone: a bounded 503 with Retry-After, never a hang or a 500, and recovery by itself.

These tests stop and start a broker, so each runs its own (the launcher's) instead of the session's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from scripts.kafka.local import KafkaNode
from tests.support.api import api_client
from tests.support.kafka_reads import read_topic
from tests.support.settings import make_settings

pytestmark = pytest.mark.integration

SEND_TIMEOUT_S = 2.0
# The bound the API promises is SEND_TIMEOUT_S; the slack covers a loaded 2-core CI machine, not a hang.
RESPONSE_BOUND_S = SEND_TIMEOUT_S + 3.0
RECOVERY_DEADLINE_S = 90.0

JOB = {"url": "https://example.com/a.png", "filter": "contour"}


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaNode]:
    node = KafkaNode(tmp_path / "kafka")
    try:
        yield node
    finally:
        node.stop()


def outage_settings(node: KafkaNode, tmp_path: Path) -> Settings:
    return make_settings(node.bootstrap_servers, tmp_path, send_timeout_s=SEND_TIMEOUT_S, retry_after_s=4)


async def timed_post(api: httpx.AsyncClient) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await api.post("/images", json=JOB)
    return response, time.monotonic() - started


async def post_until_accepted(api: httpx.AsyncClient) -> httpx.Response:
    """POST as a client following Retry-After would, until accepted or the deadline passes."""
    async with asyncio.timeout(RECOVERY_DEADLINE_S):
        while True:
            response, elapsed_s = await timed_post(api)
            assert elapsed_s < RESPONSE_BOUND_S
            if response.status_code == 202:
                return response
            assert response.status_code == 503, response.text
            await asyncio.sleep(0.5)  # a client's back-off between retries, not synchronisation


def assert_unavailable(response: httpx.Response, elapsed_s: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "4"
    assert "retry" in response.json()["detail"]
    assert elapsed_s < RESPONSE_BOUND_S


async def test_broker_stopped_gives_bounded_503_then_recovers(own_broker: KafkaNode, tmp_path: Path) -> None:
    await asyncio.to_thread(own_broker.start)
    settings = outage_settings(own_broker, tmp_path)
    async with api_client(settings) as api:
        before = await api.post("/images", json=JOB)
        assert before.status_code == 202

        await asyncio.to_thread(own_broker.stop)
        for _ in range(3):
            assert_unavailable(*await timed_post(api))
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["broker"].startswith("unavailable")
        assert ready.json()["database"] == "ok"

        await asyncio.to_thread(own_broker.start)
        after = await post_until_accepted(api)

    keys = {record.key.decode() for record in await read_topic(settings, settings.images_topic)}
    assert {before.json()["id"], after.json()["id"]} <= keys


async def test_api_started_without_broker_recovers_when_it_appears(own_broker: KafkaNode, tmp_path: Path) -> None:
    settings = outage_settings(own_broker, tmp_path)
    async with api_client(settings) as api:
        assert (await api.get("/healthz")).status_code == 200
        assert_unavailable(*await timed_post(api))

        await asyncio.to_thread(own_broker.start)
        accepted = await post_until_accepted(api)
        assert (await api.get(accepted.json()["status_url"])).json()["status"] == "queued"
        assert (await api.get("/readyz")).status_code == 200
