"""Scenarios 3 and 4: the brokers fail under load, the API answers in bounded time, nothing accepted is lost.

Both scenarios stop or kill brokers, so each runs its own (the launcher's), never the session's broker:

- **Broker outage** (one broker): the broker is stopped (SIGTERM, then SIGKILL in the next round) while POSTs keep
  coming, stays away for a few seconds and comes back on the same port with the same data. Every POST gets 202
  or 503 within the send timeout plus a little slack; every 202'd job is done once the broker is back, by the
  same worker processes (never restarted), and jobs accepted after the outage are done too.
- **Leader loss** (3 brokers, replication factor 3, ``min.insync.replicas=2``): the leader of the busiest
  partition is killed with SIGKILL, restarted, and once every replica is back in sync the next leader goes.
  POSTs during a leader change may get 503; none may get a 500 or hang, and every 202'd job is done once.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from scripts.kafka.local import KafkaCluster, KafkaNode
from tests.reliability.cluster import REPLICAS, busiest_partition_leader, in_sync
from tests.reliability.conftest import BROKER_START_TIMEOUT_S, StartApi, StartWorker
from tests.reliability.harness import (
    LoadResult,
    Scale,
    count_figures,
    drain,
    post_jobs,
    record_figures,
    wait_until_ready,
)
from tests.support.image_server import ImageServer
from tests.support.processes import ApiProcess, WorkerProcess
from tests.support.worker import eventually

WORKERS = 2
# The API promises an answer within SEND_TIMEOUT_S; the slack covers a loaded 2-core CI machine, not a hang.
ANSWER_SLACK_S = 3.0
RECOVERY_TIMEOUT_S = 90.0


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[KafkaNode]:
    """A single broker of this test's own, started; stopped at the end."""
    node = KafkaNode(tmp_path / "kafka")
    await asyncio.to_thread(node.start, BROKER_START_TIMEOUT_S)
    try:
        yield node
    finally:
        await asyncio.to_thread(node.stop)


def stream(images: ImageServer, seeds: Iterator[int], until: asyncio.Event, limit: int) -> Iterator[str]:
    """Distinct image URLs until ``until`` is set (at most ``limit``: the load stays bounded)."""
    for _ in range(limit):
        if until.is_set():
            return
        yield images.url(f"/img/{next(seeds)}.png?delay=0.05")


async def start_pipeline(
    settings: Settings, start_api: StartApi, start_worker: StartWorker
) -> tuple[ApiProcess, list[WorkerProcess]]:
    api = start_api(settings)
    workers = [start_worker(settings) for _ in range(WORKERS)]
    await wait_until_ready(api.base_url)
    for worker in workers:
        await eventually(functools.partial(_joined, worker), what="each worker joined the group")
    return api, workers


async def _joined(worker: WorkerProcess) -> bool:
    return "assigned ['" in worker.log()  # a non-empty assignment: the worker is a member and owns partitions


def answered_in_bound(load: LoadResult, bound_s: float, what: str) -> str | None:
    """Why ``load`` broke the API's promise (a 202 or 503 within ``bound_s``, nothing else), or None."""
    if load.errors:
        return f"{what}: requests without an answer or with a transport error: {dict(load.errors)}"
    if not set(load.statuses) <= {202, 503}:
        return f"{what}: statuses other than 202/503: {dict(load.statuses)}"
    if load.slowest_s > bound_s:
        return f"{what}: slowest answer {load.slowest_s:.2f} s is over the {bound_s:.1f} s bound"
    return None


async def test_broker_outage_under_load_loses_nothing_and_workers_resume(
    own_broker: KafkaNode,
    reliability_settings: Settings,
    images: ImageServer,
    start_api: StartApi,
    start_worker: StartWorker,
    scale: Scale,
) -> None:
    settings = reliability_settings.model_copy(update={"kafka_bootstrap_servers": own_broker.bootstrap_servers})
    bound_s = settings.send_timeout_s + ANSWER_SLACK_S
    api, workers = await start_pipeline(settings, start_api, start_worker)
    pids = [worker.process.pid for worker in workers]
    rounds, rate_per_s = scale.pick(2, 6), scale.pick(20, 40)
    steady_s, outage_s = scale.pick(3, 6), scale.pick(2, 10)  # a broker start adds 8-20 s more
    seeds = itertools.count()
    churn_over = asyncio.Event()
    churn = asyncio.create_task(
        post_jobs(
            api.base_url,
            stream(images, seeds, churn_over, limit=rate_per_s * 600),
            rate_per_s=rate_per_s,
            timeout_s=2 * bound_s,
        )
    )

    outages = []
    for round_ in range(rounds):
        await asyncio.sleep(steady_s)  # the fault schedule: steady load, then the broker goes
        how = "SIGTERM" if round_ % 2 == 0 else "SIGKILL"
        await asyncio.to_thread(own_broker.stop if how == "SIGTERM" else own_broker.kill)
        outages.append(how)
        await asyncio.sleep(outage_s)  # POSTs go on against a missing broker
        await asyncio.to_thread(own_broker.start, BROKER_START_TIMEOUT_S)
        await wait_until_ready(api.base_url, timeout_s=RECOVERY_TIMEOUT_S)
    churn_over.set()
    log_marks = [len(worker.log()) for worker in workers]
    after_urls = [images.url(f"/img/{next(seeds)}.png?delay=0.05") for _ in range(scale.pick(60, 300))]
    after = await post_jobs(api.base_url, after_urls, rate_per_s=rate_per_s, timeout_s=2 * bound_s)
    during = await churn

    accepted = during.accepted + after.accepted
    drain_s = await drain(settings, accepted, timeout_s=scale.pick(120, 600))
    figures = await count_figures(settings, accepted, images, drain_s=drain_s)
    slowest_s = max(during.slowest_s, after.slowest_s)
    line = record_figures(
        "broker-outage",
        figures,
        posted=sum(during.statuses.values()) + sum(after.statuses.values()),
        rejected_503=during.statuses[503] + after.statuses[503],
        slowest_s=slowest_s,
        outages="+".join(outages),
    )
    assert (problem := answered_in_bound(during, bound_s, "during the outages")) is None, f"{problem}; {line}"
    assert during.statuses[503] > 0, f"no POST saw the broker missing: the fault did not happen? {line}"
    assert after.statuses == {202: len(after_urls)}, f"the API has not recovered: {dict(after.statuses)}; {line}"
    assert after.slowest_s <= bound_s, line
    assert figures.lost == 0, line
    assert figures.recorded_twice == 0, line
    assert figures.done == figures.accepted, line
    assert api.process.poll() is None, f"the API died: {api.log()[-2000:]}"
    for worker, pid, mark in zip(workers, pids, log_marks, strict=True):
        # The same process that was started before the outages (never restarted) is still running.
        assert worker.process.poll() is None, f"worker {pid} exited: {worker.log()[-3000:]}"
        assert "Done (" in worker.log()[mark:], f"worker {pid} did no job after the outage: {worker.log()[-3000:]}"


async def test_leader_loss_in_three_broker_cluster_loses_nothing(
    own_cluster: KafkaCluster,
    reliability_settings: Settings,
    images: ImageServer,
    start_api: StartApi,
    start_worker: StartWorker,
    scale: Scale,
) -> None:
    settings = reliability_settings.model_copy(
        update={"kafka_bootstrap_servers": own_cluster.bootstrap_servers, "topic_replication_factor": REPLICAS}
    )
    bound_s = settings.send_timeout_s + ANSWER_SLACK_S
    api, workers = await start_pipeline(settings, start_api, start_worker)
    await eventually(lambda: in_sync(settings), timeout_s=RECOVERY_TIMEOUT_S, what="every replica in sync")
    kills, rate_per_s = scale.pick(2, 6), scale.pick(25, 50)
    steady_s, down_s = scale.pick(2, 4), scale.pick(2, 5)
    load_over = asyncio.Event()
    load = asyncio.create_task(
        post_jobs(
            api.base_url,
            stream(images, itertools.count(), load_over, limit=rate_per_s * 600),
            rate_per_s=rate_per_s,
            timeout_s=2 * bound_s,
        )
    )

    victims = []
    for _ in range(kills):
        await asyncio.sleep(steady_s)  # the fault schedule: steady load, then the busiest partition's leader goes
        victim = await busiest_partition_leader(settings)
        await asyncio.to_thread(own_cluster.node(victim).kill)
        victims.append(victim)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(own_cluster.node(victim).start, BROKER_START_TIMEOUT_S)
        await eventually(lambda: in_sync(settings), timeout_s=RECOVERY_TIMEOUT_S, what="every replica back in sync")
    await asyncio.sleep(steady_s)  # a little load after the last recovery
    load_over.set()
    result = await load

    drain_s = await drain(settings, result.accepted, timeout_s=scale.pick(120, 600))
    figures = await count_figures(settings, result.accepted, images, drain_s=drain_s)
    line = record_figures(
        "leader-loss",
        figures,
        posted=sum(result.statuses.values()),
        rejected_503=result.statuses[503],
        slowest_s=result.slowest_s,
        killed="+".join(map(str, victims)),
    )
    assert (problem := answered_in_bound(result, bound_s, "during leader changes")) is None, f"{problem}; {line}"
    assert result.statuses[202] > 0, line
    assert figures.lost == 0, line
    assert figures.recorded_twice == 0, line
    assert figures.done == figures.accepted, line
    assert api.process.poll() is None, f"the API died: {api.log()[-2000:]}"
    for worker in workers:
        assert worker.process.poll() is None, f"worker exited: {worker.log()[-3000:]}"
