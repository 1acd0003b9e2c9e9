"""concurrency: what key-ordered concurrency buys for I/O-bound jobs, against the ideal and a partition-bound consumer.

One in-process worker consumes 100 ms I/O-bound jobs (16x16 uploads with ``JOB_EXTRA_DELAY_S=0.1``: a tiny
filter plus a 100 ms wait, as a slow download would be) from a 6-partition topic at several concurrency
levels, each on a fresh topic, group and database. Each level is divided by its ideal (concurrency / 0.1 s)
and by a partition-bound consumer (:mod:`scripts.bench.partition_bound`) running the same JobHandler on the
same kind of topic, whose own ideal is partitions / 0.1 s. Jobs per second are counted from the consumer's
start to the last job handled, so each figure includes one group join.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from consumer.handler import JobHandler
from consumer.worker import Worker
from core.blobs import open_blob_store
from core.jobs import JobStore
from core.schema import upgrade
from core.settings import Settings
from schemas import FilterName
from scripts.bench.context import Context
from scripts.bench.partition_bound import PartitionBoundConsumer
from scripts.bench.results import Benchmark, FigureSpec, Plan, Run
from scripts.bench.workload import CountingHandler, prefill, tiny_png, wait_for

NAME = "concurrency"
JOB_SECONDS = 0.1
PARTITIONS = 6
FILTER = FilterName.INVERT
BOUND = "partition-bound jobs/s"
BOUND_IDEAL = "partition-bound ideal jobs/s"
JOBS_TIMEOUT_S = 300.0


def levels(quick: bool) -> list[int]:
    return [1, 8] if quick else [1, 8, 32, 64]


def min_wall_s(quick: bool) -> float:
    """Enough jobs per measurement that start-up and the last commit do not dominate."""
    return 0.5 if quick else 2.0


def jobs_for(rate_per_s: float, quick: bool) -> int:
    return max(12, int(min_wall_s(quick) * rate_per_s))


def plan(quick: bool) -> Plan:
    figures: list[FigureSpec] = [FigureSpec(BOUND_IDEAL, "jobs/s"), FigureSpec(BOUND, "jobs/s", (BOUND_IDEAL,))]
    for level in levels(quick):
        figures.append(FigureSpec(f"ideal c={level} jobs/s", "jobs/s"))
        figures.append(FigureSpec(f"concurrency {level} jobs/s", "jobs/s", (f"ideal c={level} jobs/s", BOUND)))
    return Plan(
        figures=tuple(figures),
        settings={
            "job": f"16x16 upload, filter {FILTER.value}, JOB_EXTRA_DELAY_S={JOB_SECONDS}",
            "partitions": PARTITIONS,
            "levels": levels(quick),
            "jobs_per_measurement": f"max(12, {min_wall_s(quick):g} s x ideal rate)",
            "worker": "one in-process consumer.worker.Worker with JobHandler (SQLite in a temp dir)",
            "partition_bound": "aiokafka loop, one sequential task per partition, same JobHandler, "
            "commits every COMMIT_INTERVAL_S",
        },
        notes=("The ideal figures are computed (concurrency / 0.1 s, partitions / 0.1 s), not measured.",),
    )


async def measure(ctx: Context) -> Run:
    quick = ctx.quick
    values: dict[str, float] = {BOUND_IDEAL: PARTITIONS / JOB_SECONDS}
    bound_jobs = jobs_for(PARTITIONS / JOB_SECONDS, quick)
    settings = ctx.fresh_settings(NAME, topic_partitions=PARTITIONS, job_extra_delay_s=JOB_SECONDS)
    values[BOUND] = await _jobs_per_s(settings, bound_jobs, PartitionBoundConsumer)
    ctx.say(NAME, f"partition-bound: {values[BOUND]:.1f} jobs/s ({bound_jobs} jobs)")
    for level in levels(quick):
        ideal = level / JOB_SECONDS
        jobs = jobs_for(ideal, quick)
        settings = ctx.fresh_settings(
            NAME, topic_partitions=PARTITIONS, job_extra_delay_s=JOB_SECONDS, worker_concurrency=level
        )
        values[f"ideal c={level} jobs/s"] = ideal
        values[f"concurrency {level} jobs/s"] = rate = await _jobs_per_s(settings, jobs, Worker)
        ctx.say(NAME, f"concurrency {level:>2}: {rate:.1f} jobs/s ({jobs} jobs, {rate / ideal:.0%} of ideal)")
    return Run(values)


class _Consumer(Protocol):
    """What the worker and the partition-bound consumer have in common here."""

    def stop(self) -> None: ...

    async def run(self) -> None: ...


async def _jobs_per_s(
    settings: Settings, jobs_count: int, consumer_type: Callable[[Settings, CountingHandler], _Consumer]
) -> float:
    """Jobs per second of one consumer over a pre-filled topic, from its start to the last job handled."""
    await prefill(settings, jobs_count, tiny_png(), FILTER)
    jobs = JobStore.from_url(settings.database_url)
    await upgrade(jobs.engine)
    inner = JobHandler(settings, jobs, open_blob_store(settings))
    handler = CountingHandler(inner, jobs_count)
    consumer = consumer_type(settings, handler)
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    try:
        await wait_for(handler.all_handled, JOBS_TIMEOUT_S, f"{jobs_count} jobs handled")
        elapsed_s = time.perf_counter() - started
    finally:
        consumer.stop()
        await task
        await inner.aclose()
        await jobs.close()
    return jobs_count / elapsed_s


BENCHMARK = Benchmark(NAME, "key-ordered concurrency against the ideal and a partition-bound consumer", plan, measure)
