"""Scenario 5: scaling 1 -> 4 -> 1 workers again and again under load, with jobs slower than the rebalance drain.

One worker runs throughout; each round starts three more, waits until all four own partitions, then stops the
three with SIGTERM, 0.7 s apart, and waits until the first owns all six again. Every scale step is an eager
rebalance: all members let go of all partitions, drain running jobs for at most ``shutdown_timeout_s`` (2 s
here), commit, and rejoin. One job in five takes 4 s, so drains regularly cancel running jobs, which stay
uncommitted and run again on the next owner (counted as re-executions). What must hold: nothing lost, nothing
recorded twice, every stopped worker exits 0 within a bound, no rebalance listener fails, and no worker ever
commits for a partition it does not own (see :func:`tests.reliability.harness.commit_ownership_problems` for
exactly what is checked in the logs).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.reliability.conftest import StartApi
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
from tests.support.processes import ServiceProcess, WorkerProcess
from tests.support.worker import eventually

SHUTDOWN_TIMEOUT_S = 2.0
SLOW_JOB_S = 4.0  # longer than the drain: a slow job running at a rebalance is cancelled and runs again
SLOW_EVERY = 5
RATE_PER_S = 5.0
STOP_STAGGER_S = 0.7
FAST_JOB_S = 0.05
EXTRA_WORKERS = 3
# A stop is the drain, the commit, leaving the group (aiokafka first finishes a JoinGroup already under way, which
# the broker may hold up to the rebalance timeout, shutdown_timeout_s + 10 s), closing the DLQ producer and the DB.
STOP_BOUND_S = SHUTDOWN_TIMEOUT_S + (SHUTDOWN_TIMEOUT_S + 10.0) + 6.0
OWN_BOUND_S = 60.0
_LISTENER = "failed on_partitions_revoked"  # aiokafka's log line when the rebalance listener raised


@pytest.mark.timeout(900)
async def test_scaling_storm_loses_nothing_and_commits_only_owned_partitions(
    reliability_settings: Settings,
    images: ImageServer,
    start_api: StartApi,
    processes: list[ServiceProcess],
    tmp_path: Path,
    scale: Scale,
) -> None:
    settings = reliability_settings.model_copy(update={"shutdown_timeout_s": SHUTDOWN_TIMEOUT_S})
    all_workers: list[WorkerProcess] = []

    def start_worker() -> WorkerProcess:
        # Debug level for the worker's own "committed {...}" lines: every commit, not only failed ones, is checked.
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(all_workers)}.log", "--log-level", "debug")
        processes.append(worker)
        all_workers.append(worker)
        return worker

    api = start_api(settings)
    first = start_worker()
    await wait_until_ready(api.base_url)
    rounds = scale.pick(2, 8)
    storm_over = False

    def urls() -> Iterator[str]:
        """Jobs until the storm is over (bounded), one in ``SLOW_EVERY`` slower than the drain."""
        for seed in range(scale.pick(1000, 10000)):
            if storm_over:
                return
            delay_s = SLOW_JOB_S if seed % SLOW_EVERY == 0 else FAST_JOB_S
            yield images.url(f"/img/{seed}.png?delay={delay_s}")

    started = time.monotonic()
    load = asyncio.create_task(post_jobs(api.base_url, urls(), rate_per_s=RATE_PER_S))
    await eventually(functools.partial(_owns, first, 6), timeout_s=OWN_BOUND_S, what="the first worker owns all")
    stop_s: list[float] = []
    for _ in range(rounds):
        extra = [start_worker() for _ in range(EXTRA_WORKERS)]
        await eventually(
            functools.partial(_all_own_some, [first, *extra]), timeout_s=OWN_BOUND_S, what="4 workers own partitions"
        )
        signalled = []
        for worker in extra:
            worker.terminate()
            signalled.append(time.monotonic())
            # Staggered, so members are still draining when an earlier one leaves and the group rebalances again.
            await asyncio.sleep(STOP_STAGGER_S)
        for worker, signalled_at in zip(extra, signalled, strict=True):
            code = await asyncio.to_thread(worker.wait, max(0.0, signalled_at + STOP_BOUND_S - time.monotonic()))
            stop_s.append(time.monotonic() - signalled_at)
            assert code == 0, worker.log()
        await eventually(functools.partial(_owns, first, 6), timeout_s=OWN_BOUND_S, what="back to one worker")
    storm_over = True
    storm_s = time.monotonic() - started
    result = await load
    drain_s = await drain(settings, result.accepted, timeout_s=scale.pick(120, 600))
    first.terminate()
    assert await asyncio.to_thread(first.wait, STOP_BOUND_S) == 0, first.log()

    figures = await count_figures(settings, result.accepted, images, drain_s=drain_s)
    slow_paths = {f"/img/{seed}.png" for seed in range(0, len(result.accepted), SLOW_EVERY)}
    slow_rerun = sum(1 for path in slow_paths if images.hits[path] > 1)
    cancelled = sum(_cancelled(worker.log()) for worker in all_workers)
    problems = [f"worker-{i}: {p}" for i, w in enumerate(all_workers) for p in commit_ownership_problems(w.log())]
    commits = sum(worker.log().count(" committed {") for worker in all_workers)
    listener_failures = [
        f"worker-{i}: {line}" for i, w in enumerate(all_workers) for line in w.log().splitlines() if _LISTENER in line
    ]
    line = record_figures(
        "rebalance-storm",
        figures,
        rounds=rounds,
        storm_s=storm_s,
        extra_executions=sum(images.hits.values()) - len(result.accepted),
        slow_rerun=slow_rerun,
        cancelled_at_drain=cancelled,
        commits=commits,
        slowest_stop_s=max(stop_s),
        listener_failures=len(listener_failures),
    )
    assert result.errors == {}, line
    assert set(result.statuses) == {202}, line
    assert figures.lost == 0, line
    assert figures.recorded_twice == 0, line
    assert figures.done == len(result.accepted), line
    assert problems == [], f"{problems[:10]}: {line}"
    assert commits > 0, line
    # The revocation listener is where a worker drains and commits before a rebalance moves its partitions on;
    # aiokafka only logs its exceptions and rejoins anyway, so a failure there must not pass unnoticed.
    assert listener_failures == [], f"{listener_failures[:5]}: {line}"


async def _owns(worker: WorkerProcess, count: int) -> bool:
    owned = owned_partitions(worker.log())
    return owned is not None and len(owned) == count


async def _all_own_some(workers: list[WorkerProcess]) -> bool:
    return all(owned_partitions(worker.log()) for worker in workers)


def _cancelled(log: str) -> int:
    marker = " job(s) outlived the "
    return sum(int(line.split(marker)[0].rsplit(" ", 1)[1]) for line in log.splitlines() if marker in line)


def test_commit_ownership_check_flags_foreign_and_unexpected_commits() -> None:
    """The log check above can fail: a commit outside the assignment, an unexpected error, no broker error."""
    t = "2026-11-27 23:00:00,000"
    log = "\n".join(
        [
            f"{t} INFO consumer.worker: assigned ['images-x[0]', 'images-x[3]']",
            f"{t} DEBUG consumer.worker: committed {{'images-x[0]': 5}}",
            f"{t} INFO consumer.worker: revoked ['images-x[0]', 'images-x[3]']",
            f"{t} ERROR aiokafka.consumer.group_coordinator: OffsetCommit failed for group g due to group error "
            "([Error 27] RebalanceInProgressError: g), will rejoin",
            f"{t} WARNING consumer.worker: commit of {{'images-x[3]': 7}} failed: CommitFailedError('rebalanced')",
            f"{t} INFO consumer.worker: assigned ['images-x[1]']",
            f"{t} DEBUG consumer.worker: committed {{'images-x[0]': 6}}",
            f"{t} WARNING consumer.worker: commit of {{'images-x[1]': 2}} failed: IllegalStateError('not assigned')",
            f"{t} WARNING consumer.worker: commit of {{'images-x[1]': 2}} failed: CommitFailedError('rebalanced')",
        ]
    )
    problems = commit_ownership_problems(log)
    assert [problem.split(":")[0] for problem in problems] == ["line 7", "line 8", "line 9"], problems
    assert commit_ownership_problems("\n".join(log.splitlines()[:6])) == []
