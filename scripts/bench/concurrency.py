"""concurrency: what key-ordered concurrency buys, against the ideal, a partition-bound consumer and FastStream.

One in-process worker consumes 100 ms I/O-bound jobs (16x16 uploads with ``JOB_EXTRA_DELAY_S=0.1``: a tiny
filter plus a 100 ms wait, as a slow download would be) from a 6-partition topic at several concurrency
levels, each on a fresh topic, group and database. Each level is divided by its ideal (concurrency / 0.1 s)
and by a partition-bound consumer (:mod:`scripts.bench.partition_bound`) running the same JobHandler on the
same kind of topic, whose own ideal is partitions / 0.1 s. Jobs per second are counted from the consumer's
start to the last job handled, so each figure includes one group join.

The peer is FastStream's subscriber (:mod:`scripts.bench.peer_worker`) with the same handler: on jobs that only
wait, in both acknowledgement modes, against the Worker at the same concurrency; and on CPU-bound jobs (a blur
of a large photo-like PNG, through the real JobHandler) acking after processing, against the Worker.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Protocol

from faststream import AckPolicy

from consumer.handler import JobHandler
from consumer.retry import RecordHandler
from consumer.worker import Worker
from core.blobs import open_blob_store
from core.jobs import JobStore
from core.schema import upgrade
from core.settings import Settings
from schemas import FilterName
from scripts.bench.context import Context
from scripts.bench.partition_bound import PartitionBoundConsumer
from scripts.bench.peer_worker import FastStreamConsumer
from scripts.bench.results import Benchmark, FigureSpec, Goal, Plan, Run
from scripts.bench.workload import CountingHandler, WaitingHandler, photo_png, prefill, tiny_png, wait_for

NAME = "concurrency"
JOB_SECONDS = 0.1
PARTITIONS = 6
FILTER = FilterName.INVERT
BOUND = "partition-bound jobs/s"
BOUND_IDEAL = "partition-bound ideal jobs/s"
# Repeated keys: every image comes back several times (reprocessing); records behind their own key must not
# hold the slots that records of other keys could use.
REPEATED_LEVEL = 32
REPEATED_IDEAL = f"ideal waiting jobs c={REPEATED_LEVEL} jobs/s"
DISTINCT = f"waiting jobs c={REPEATED_LEVEL}, distinct keys jobs/s"
REPEATED = f"waiting jobs c={REPEATED_LEVEL}, repeated keys jobs/s"
OVERLAPS = "repeated keys: same-key overlaps"
PEER_ACK = f"FastStream ACK after processing, waiting jobs c={REPEATED_LEVEL} jobs/s"
PEER_ACK_FIRST = f"FastStream ACK_FIRST (commits first), waiting jobs c={REPEATED_LEVEL} jobs/s"
CPU_FILTER = FilterName.BLUR
CPU_OURS = "CPU-bound, Worker jobs/s"
CPU_PEER = "CPU-bound, FastStream ACK after processing jobs/s"
JOBS_TIMEOUT_S = 300.0


def levels(quick: bool) -> list[int]:
    return [1, 8] if quick else [1, 8, 32, 64]


def min_wall_s(quick: bool) -> float:
    """Enough jobs per measurement that start-up and the last commit do not dominate."""
    return 0.5 if quick else 2.0


def jobs_for(rate_per_s: float, quick: bool) -> int:
    return max(12, int(min_wall_s(quick) * rate_per_s))


def repeated_keys(quick: bool) -> tuple[int, int]:
    """Keys, and events per key, of the repeated-keys measurement."""
    return (12, 3) if quick else (60, 10)


def cpu_bound(quick: bool) -> tuple[int, int]:
    """Jobs, and the image side in pixels, of the CPU-bound comparison."""
    return (6, 256) if quick else (24, 1024)


def plan(quick: bool) -> Plan:
    figures: list[FigureSpec] = [FigureSpec(BOUND_IDEAL, "jobs/s"), FigureSpec(BOUND, "jobs/s", (BOUND_IDEAL,))]
    for level in levels(quick):
        figures.append(FigureSpec(f"ideal c={level} jobs/s", "jobs/s"))
        figures.append(FigureSpec(f"concurrency {level} jobs/s", "jobs/s", (f"ideal c={level} jobs/s", BOUND)))
    figures.append(FigureSpec(REPEATED_IDEAL, "jobs/s"))
    figures.append(FigureSpec(PEER_ACK, "jobs/s", (REPEATED_IDEAL,)))
    figures.append(FigureSpec(PEER_ACK_FIRST, "jobs/s", (REPEATED_IDEAL,)))
    figures.append(FigureSpec(DISTINCT, "jobs/s", (REPEATED_IDEAL, PEER_ACK, PEER_ACK_FIRST)))
    figures.append(FigureSpec(REPEATED, "jobs/s", (REPEATED_IDEAL, DISTINCT)))
    figures.append(FigureSpec(OVERLAPS, "records", higher_is_better=False))
    figures.append(FigureSpec(CPU_PEER, "jobs/s"))
    figures.append(FigureSpec(CPU_OURS, "jobs/s", (CPU_PEER,)))
    goals = (
        Goal(
            f"waiting jobs c={REPEATED_LEVEL} >= 4x FastStream acking after processing",
            DISTINCT,
            ">=",
            4.0,
            baseline=PEER_ACK,
        ),
        Goal(f"waiting jobs >= 0.8 of the ideal (c={REPEATED_LEVEL})", DISTINCT, ">=", 0.8, baseline=REPEATED_IDEAL),
        Goal("CPU-bound jobs >= 1.0x FastStream acking after processing", CPU_OURS, ">=", 1.0, baseline=CPU_PEER),
        Goal(f"repeated keys >= 0.8 of the ideal (c={REPEATED_LEVEL})", REPEATED, ">=", 0.8, baseline=REPEATED_IDEAL),
        Goal("repeated keys: no two records of one key at once", OVERLAPS, "<", 0.5),
    )
    cpu_jobs, cpu_px = cpu_bound(quick)
    return Plan(
        figures=tuple(figures),
        goals=goals,
        settings={
            "job": f"16x16 upload, filter {FILTER.value}, JOB_EXTRA_DELAY_S={JOB_SECONDS}",
            "partitions": PARTITIONS,
            "levels": levels(quick),
            "jobs_per_measurement": f"max(12, {min_wall_s(quick):g} s x ideal rate)",
            "waiting_jobs": "jobs that only wait {} s (no database, no image), c={}: {} keys x {} events each, "
            "against as many distinct keys".format(JOB_SECONDS, REPEATED_LEVEL, *repeated_keys(quick)),
            "worker": "one in-process consumer.worker.Worker with JobHandler (SQLite in a temp dir)",
            "partition_bound": "aiokafka loop, one sequential task per partition, same JobHandler, "
            "commits every COMMIT_INTERVAL_S",
            "faststream": f"FastStream KafkaBroker subscriber (version under versions), max_workers={REPEATED_LEVEL} "
            "(waiting jobs) or WORKER_CONCURRENCY (CPU-bound), same handler, auto_offset_reset=earliest",
            "cpu_bound": f"{cpu_jobs} jobs, {cpu_px}x{cpu_px} PNG (gradients, noise, shapes), filter "
            f"{CPU_FILTER.value}, JobHandler, WORKER_CONCURRENCY default for both",
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
    keys, repeats = repeated_keys(quick)
    values[REPEATED_IDEAL] = REPEATED_LEVEL / JOB_SECONDS
    overlaps: list[int] = []
    for figure, key_count, per_key in ((DISTINCT, keys * repeats, 1), (REPEATED, keys, repeats)):
        settings = ctx.fresh_settings(NAME, topic_partitions=PARTITIONS, worker_concurrency=REPEATED_LEVEL)
        values[figure] = rate = await _jobs_per_s(
            settings, key_count, Worker, repeats=per_key, overlaps=overlaps, waiting_only=True
        )
        ctx.say(NAME, f"{figure}: {rate:.1f} ({key_count} keys x {per_key}, {rate / values[REPEATED_IDEAL]:.0%})")
    values[OVERLAPS] = float(sum(overlaps))
    for figure, policy in ((PEER_ACK, AckPolicy.ACK), (PEER_ACK_FIRST, AckPolicy.ACK_FIRST)):
        settings = ctx.fresh_settings(NAME, topic_partitions=PARTITIONS, worker_concurrency=REPEATED_LEVEL)
        peer = functools.partial(FastStreamConsumer, ack_policy=policy, max_workers=REPEATED_LEVEL)
        values[figure] = rate = await _jobs_per_s(settings, keys * repeats, peer, waiting_only=True)
        ctx.say(NAME, f"{figure}: {rate:.1f}")
    jobs, side_px = cpu_bound(quick)
    photo = photo_png(side_px)
    concurrency = Settings().worker_concurrency
    for figure, consumer in (
        (CPU_PEER, functools.partial(FastStreamConsumer, ack_policy=AckPolicy.ACK, max_workers=concurrency)),
        (CPU_OURS, Worker),
    ):
        settings = ctx.fresh_settings(NAME, topic_partitions=PARTITIONS)
        values[figure] = rate = await _jobs_per_s(settings, jobs, consumer, data=photo, image_filter=CPU_FILTER)
        ctx.say(NAME, f"{figure}: {rate:.2f} ({jobs} jobs of {side_px}x{side_px})")
    return Run(values)


class _Consumer(Protocol):
    """What the worker and the partition-bound consumer have in common here."""

    def stop(self) -> None: ...

    async def run(self) -> None: ...


async def _jobs_per_s(
    settings: Settings,
    keys: int,
    consumer_type: Callable[[Settings, CountingHandler], _Consumer],
    *,
    repeats: int = 1,
    overlaps: list[int] | None = None,
    waiting_only: bool = False,
    data: bytes | None = None,
    image_filter: FilterName = FILTER,
) -> float:
    """Jobs per second of one consumer over a pre-filled topic (``keys`` x ``repeats`` events), from its start to
    the last job handled; ``waiting_only`` jobs just wait JOB_SECONDS (:class:`WaitingHandler`)."""
    jobs_count = keys * repeats
    await prefill(settings, keys, data or tiny_png(), image_filter, repeats=repeats, write_blobs=not waiting_only)
    jobs = JobStore.from_url(settings.database_url)
    await upgrade(jobs.engine)
    inner: RecordHandler = (
        WaitingHandler(JOB_SECONDS) if waiting_only else JobHandler(settings, jobs, open_blob_store(settings))
    )
    handler = CountingHandler(inner, jobs_count)
    consumer = consumer_type(settings, handler)
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    try:
        handled = asyncio.create_task(wait_for(handler.all_handled, JOBS_TIMEOUT_S, f"{jobs_count} jobs handled"))
        await asyncio.wait([handled, task], return_when=asyncio.FIRST_COMPLETED)
        if not handled.done():  # the consumer ended (failed) first: its error, not a timeout 5 minutes later
            handled.cancel()
            await task
            raise RuntimeError("the consumer stopped before handling every job")
        await handled
        elapsed_s = time.perf_counter() - started
    finally:
        consumer.stop()
        await task
        if isinstance(inner, JobHandler):
            await inner.aclose()
        await jobs.close()
    if overlaps is not None:
        overlaps.append(handler.same_key_overlaps)
    return jobs_count / elapsed_s


BENCHMARK = Benchmark(
    NAME, "key-ordered concurrency against the ideal, a partition-bound consumer and FastStream", plan, measure
)
