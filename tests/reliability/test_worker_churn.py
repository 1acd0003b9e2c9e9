"""Scenario 1: workers killed with ``kill -9`` at random under load lose nothing and record nothing twice.

Three workers share six partitions while a real ``image-api`` takes a steady stream of jobs. Every few seconds a
worker chosen by a seeded random generator is killed with SIGKILL (no drain, no commit, no leaving the group) and
a replacement is started at once. A hard kill may re-run what was in flight (at-least-once); the processed-ids
table must keep every job recorded once, and the group must catch up: committed offsets reach the end of every
partition within a bound after the last kill.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time

import pytest

from core.settings import Settings
from tests.reliability.conftest import StartApi, StartWorker
from tests.reliability.harness import (
    Scale,
    commit_ownership_problems,
    count_figures,
    drain,
    owned_partitions,
    post_jobs,
    record_figures,
    wait_until_ready,
)
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic
from tests.support.processes import WorkerProcess
from tests.support.worker import committed_and_end_offsets, eventually, offsets_all_committed

WORKERS = 3
SEED = 20261127
JOB_DELAY_S = 0.5  # long enough that a kill usually lands on jobs in flight
# A killed member holds its partitions until its session (10 s) expires; the group then rebalances and works off
# the backlog the churn left (2 cores and SQLite: about 30 jobs/s, so the long form needs minutes).
LAG_ZERO_BOUND_S = {"short": 90.0, "long": 300.0}


@pytest.mark.timeout(900)
async def test_kill_9_churn_loses_nothing_and_records_nothing_twice(
    reliability_settings: Settings, images: ImageServer, start_api: StartApi, start_worker: StartWorker, scale: Scale
) -> None:
    settings = reliability_settings
    rng = random.Random(SEED)
    api = start_api(settings)
    workers = [start_worker(settings) for _ in range(WORKERS)]
    all_workers = list(workers)
    await wait_until_ready(api.base_url)
    await eventually(functools.partial(_all_own_some, workers), what="all three workers own partitions")
    events, kills = scale.pick(300, 3000), scale.pick(5, 30)
    pauses_s = [rng.uniform(2.5, 4.5) for _ in range(kills)]  # the fault schedule, fixed by the seed
    victims = [rng.randrange(WORKERS) for _ in range(kills)]
    load_s_planned = sum(pauses_s) + 3.0  # the load outlasts the churn, so every kill lands under load
    urls = [images.url(f"/img/{seed}.png?delay={JOB_DELAY_S}") for seed in range(events)]
    started = time.monotonic()
    load = asyncio.create_task(post_jobs(api.base_url, urls, rate_per_s=events / load_s_planned))

    last_kill = started
    for pause_s, index in zip(pauses_s, victims, strict=True):
        await asyncio.sleep(pause_s)  # the fault schedule, not synchronisation
        workers[index].kill()
        last_kill = time.monotonic()
        workers[index] = start_worker(settings)
        all_workers.append(workers[index])
    load_running_at_last_kill = not load.done()
    result = await load
    load_s = time.monotonic() - started

    await eventually(
        functools.partial(offsets_all_committed, settings),
        timeout_s=LAG_ZERO_BOUND_S[scale.value],
        what="consumer lag back to 0",
    )
    lag_zero_s = time.monotonic() - last_kill
    drain_s = await drain(settings, result.accepted, timeout_s=30.0)  # lag 0 means every record is finished
    committed, end = await committed_and_end_offsets(settings)

    problems = [f"worker-{i}: {p}" for i, w in enumerate(all_workers) for p in commit_ownership_problems(w.log())]
    figures = await count_figures(settings, result.accepted, images, drain_s=drain_s)
    extra_executions = sum(images.hits.values()) - len(result.accepted)
    line = record_figures(
        "worker-churn",
        figures,
        workers=WORKERS,
        kills=kills,
        extra_executions=extra_executions,
        lag_zero_after_last_kill_s=lag_zero_s,
        load_s=load_s,
        seed=SEED,
    )
    assert load_running_at_last_kill, f"every kill must land under load: {line}"
    assert result.statuses == {202: events}, line
    # The offsets count transaction markers too; the records a worker can see are exactly the accepted events.
    on_topic = await read_topic(settings, settings.images_topic, committed_only=True)
    assert len(on_topic) == events, f"{end=}: {line}"
    assert committed == end, f"{committed=} {end=}: {line}"
    assert figures.lost == 0, line
    assert figures.recorded_twice == 0, line
    assert figures.done == events, line
    assert figures.dead_lettered == 0, line
    assert problems == [], f"{problems[:10]}: {line}"
    assert set(images.hits) == {f"/img/{seed}.png" for seed in range(events)}, f"every job ran: {line}"


async def _all_own_some(workers: list[WorkerProcess]) -> bool:
    return all(owned_partitions(worker.log()) for worker in workers)
