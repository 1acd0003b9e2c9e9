"""``image-api --workers N``: several processes serve one port, each with its own producers and nothing shared
in memory, and a process that dies is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from core.jobs import JobStore
from tests.reliability.harness import free_port, wait_until_ready
from tests.reliability.hostile import descendants_of
from tests.support.processes import ApiProcess
from tests.support.settings import make_settings
from tests.support.worker import eventually

pytestmark = pytest.mark.integration

PROCESSES = 2


def serving_processes(api: ApiProcess) -> set[int]:
    """The uvicorn worker processes (spawned by multiprocessing) below the ``image-api`` process."""
    return {pid for pid, command in descendants_of(api.process.pid) if "spawn_main" in command}


async def test_several_processes_serve_one_port_and_a_dead_one_is_replaced(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path)
    api = ApiProcess(settings, tmp_path / "api.log", free_port(), "--workers", str(PROCESSES))
    jobs = JobStore.from_url(settings.database_url)
    try:
        await wait_until_ready(api.base_url)
        first = serving_processes(api)
        assert len(first) == PROCESSES, api.log()
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:

            async def submit(number: int) -> str:
                answer = await client.post(
                    "/images", json={"url": f"https://example.com/{number}.png", "filter": "blur"}
                )
                assert answer.status_code == 202, answer.text
                return str(answer.json()["id"])

            ids = await asyncio.gather(*(submit(number) for number in range(20)))
            assert len(set(ids)) == 20

            os.kill(min(first), signal.SIGKILL)

            async def replaced() -> bool:
                now = serving_processes(api)
                return len(now) == PROCESSES and min(first) not in now

            await eventually(replaced, timeout_s=30, what="a new serving process in place of the killed one")
            await wait_until_ready(api.base_url)
            ids.append(await submit(20))
        assert all([await jobs.get(image_id) for image_id in ids])

        serving = serving_processes(api)
        api.terminate()
        assert api.wait(timeout_s=30) == 0
        assert not [pid for pid in serving if os.path.exists(f"/proc/{pid}")], "every serving process stopped"  # noqa: ASYNC240
    finally:
        api.stop()
        await jobs.close()
    assert "Traceback" not in api.log(), api.log()
