"""worker: events per second through one ``Worker`` against a raw aiokafka consume-and-commit loop.

Three consumers each get a fresh topic pre-filled with the same kind of events (16x16 uploads, round-robin over
the partitions): a raw loop (``getmany``, then ``commit`` per batch, nothing else) that is the limit; the
``Worker`` engine with a no-op handler, which leaves the engine's own cost (key lanes, offset tracking, back
pressure, batched commits); and the ``Worker`` with the real ``JobHandler``, which adds the three database
statements, the blob read, the filter and the result write. The clock runs from the first record each consumer
receives (the raw loop) or starts (the Worker) to the last one: the group join before it is the broker's cost,
the same for all three, and on a run of a second or two it would swamp the difference being measured.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer

from consumer.handler import JobHandler
from consumer.retry import RecordHandler
from consumer.worker import Worker
from core.blobs import open_blob_store
from core.jobs import JobStore
from core.kafka_connection import kafka_connection
from core.schema import upgrade
from core.settings import Settings
from schemas import FilterName
from scripts.bench.context import BenchError, Context
from scripts.bench.results import Benchmark, FigureSpec, Goal, Plan, Run
from scripts.bench.workload import CountingHandler, NoopHandler, prefill, tiny_png, wait_for

NAME = "worker"
FILTER = FilterName.INVERT
RAW = "raw consume+commit loop events/s"
NOOP = "Worker, no-op handler events/s"
REAL = "Worker + JobHandler events/s"
RAW_POLL_TIMEOUT_MS = 500
HANDLED_TIMEOUT_S = 300.0


def events(quick: bool) -> tuple[int, int]:
    """(events for the raw loop and the no-op Worker, events for the Worker with JobHandler).

    The fast consumers get enough events that their measured flow lasts a second or more; the JobHandler, two
    orders of magnitude slower, needs far fewer for the same.
    """
    return (500, 40) if quick else (60_000, 1_000)


def plan(quick: bool) -> Plan:
    defaults = Settings()
    return Plan(
        figures=(
            FigureSpec(RAW, "events/s"),
            FigureSpec(NOOP, "events/s", (RAW,)),
            FigureSpec(REAL, "events/s", (RAW, NOOP)),
        ),
        goals=(Goal("the Worker engine (no-op handler) >= 0.8 of the raw loop", NOOP, ">=", 0.8, baseline=RAW),),
        settings={
            "events": {"raw loop and no-op Worker": events(quick)[0], "Worker + JobHandler": events(quick)[1]},
            "event": f"16x16 PNG upload, filter {FILTER.value}",
            "partitions": defaults.topic_partitions,
            "worker_concurrency": defaults.worker_concurrency,
            "commit_interval_s": defaults.commit_interval_s,
            "database": "SQLite (WAL) in a temp dir, fresh per measurement",
            "raw_loop": "AIOKafkaConsumer.getmany(timeout_ms=500), commit() after every non-empty batch",
            "event_loop": "asyncio's own, as image-worker runs",
        },
        notes=("The goal applies to the engine (no-op handler); the JobHandler figure adds the job's own work.",),
    )


async def measure(ctx: Context) -> Run:
    count, real_count = events(ctx.quick)
    data = tiny_png()
    values: dict[str, float] = {}

    settings = ctx.fresh_settings(NAME)
    await prefill(settings, count, data, FILTER, write_blobs=False)  # neither loop reads the blobs
    values[RAW] = await raw_loop(settings, count)
    ctx.say(NAME, f"raw loop: {values[RAW]:.0f} events/s ({count} events)")

    settings = ctx.fresh_settings(NAME)
    await prefill(settings, count, data, FILTER, write_blobs=False)
    values[NOOP] = await _worker_rate(settings, count, NoopHandler())
    ctx.say(NAME, f"Worker, no-op handler: {values[NOOP]:.0f} events/s ({count} events)")

    settings = ctx.fresh_settings(NAME)
    await prefill(settings, real_count, data, FILTER)
    jobs = JobStore.from_url(settings.database_url)
    await upgrade(jobs.engine)
    handler = JobHandler(settings, jobs, open_blob_store(settings))
    try:
        values[REAL] = await _worker_rate(settings, real_count, handler)
    finally:
        await handler.aclose()
        await jobs.close()
    ctx.say(NAME, f"Worker + JobHandler: {values[REAL]:.0f} events/s ({real_count} events)")
    return Run(values)


async def raw_loop(settings: Settings, count: int) -> float:
    """Events per second of the plainest at-least-once consumer: poll a batch, commit it, repeat."""
    consumer = AIOKafkaConsumer(
        settings.images_topic,
        **kafka_connection(settings),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen = 0
    first_at: float | None = None
    try:
        async with asyncio.timeout(HANDLED_TIMEOUT_S):
            while seen < count:
                batches = await consumer.getmany(timeout_ms=RAW_POLL_TIMEOUT_MS)
                if batches and first_at is None:
                    first_at = time.perf_counter()
                seen += sum(len(records) for records in batches.values())
                if batches:
                    await consumer.commit()
        assert first_at is not None, "count > 0"
        elapsed_s = time.perf_counter() - first_at
    except TimeoutError:
        raise BenchError(f"the raw loop saw {seen} of {count} events in {HANDLED_TIMEOUT_S:g} s") from None
    finally:
        await consumer.stop()
    return count / elapsed_s


async def _worker_rate(settings: Settings, count: int, inner: RecordHandler) -> float:
    handler = CountingHandler(inner, count)
    worker = Worker(settings, handler)
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(handler.all_handled, HANDLED_TIMEOUT_S, f"{count} events handled by the Worker")
    finally:
        worker.stop()
        await task
    first_at, last_at = handler.first_at, handler.last_at
    assert first_at is not None, "all handled"
    assert last_at is not None, "all handled"
    return count / (last_at - first_at)


BENCHMARK = Benchmark(NAME, "the Worker engine against a raw consume-and-commit loop", plan, measure)
