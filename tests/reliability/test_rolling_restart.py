"""Scenario 2: clean rolling restarts under load hand work over without losing or redoing any of it."""

from __future__ import annotations

import asyncio
import functools

from core.settings import Settings
from tests.reliability.conftest import StartApi, StartWorker
from tests.reliability.harness import Scale, count_figures, drain, post_jobs, record_figures, wait_until_ready
from tests.support.image_server import ImageServer
from tests.support.processes import WorkerProcess
from tests.support.worker import eventually

WORKERS = 3
STOP_BOUND_S = 30.0


async def test_rolling_sigterm_restarts_lose_nothing_and_redo_nothing(
    reliability_settings: Settings, images: ImageServer, start_api: StartApi, start_worker: StartWorker, scale: Scale
) -> None:
    settings = reliability_settings
    api = start_api(settings)
    workers = [start_worker(settings) for _ in range(WORKERS)]
    await wait_until_ready(api.base_url)
    for worker in workers:  # a rolling restart starts from members that are up, as an orchestrator would
        await eventually(functools.partial(_joined, worker), what="the first workers joined the group")
    events, rounds = scale.pick(300, 3000), scale.pick(2, 5)
    urls = [images.url(f"/img/{seed}.png?delay=0.05") for seed in range(events)]
    load = asyncio.create_task(post_jobs(api.base_url, urls, rate_per_s=scale.pick(40, 100)))

    for _ in range(rounds):
        for index in range(WORKERS):
            workers[index].terminate()
            assert await asyncio.to_thread(workers[index].wait, STOP_BOUND_S) == 0, workers[index].log()
            workers[index] = start_worker(settings)
            await eventually(functools.partial(_joined, workers[index]), what="the replacement joined the group")
    result = await load
    drain_s = await drain(settings, result.accepted, timeout_s=scale.pick(120, 600))

    figures = await count_figures(settings, result.accepted, images, drain_s=drain_s)
    line = record_figures("rolling-restart", figures, rounds=rounds, workers=WORKERS)
    assert result.statuses == {202: events}, line
    assert figures.lost == 0, line
    assert figures.recorded_twice == 0, line
    assert figures.executed_twice == 0, f"a clean hand-over must redo nothing: {line}"
    assert figures.done == events, line


async def _joined(worker: WorkerProcess) -> bool:
    return "assigned ['" in worker.log()  # a non-empty assignment: the worker is a member and owns partitions
