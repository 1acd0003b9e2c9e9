"""scale_out: CPU-bound jobs through 1, then 2 real ``image-worker`` processes in one group.

The uploads (``photo_png``: gradients, noise and shapes, so decoding, the Gaussian blur and PNG encoding cost
real CPU) are stored first, the workers are started and waited for until the group is Stable with all of
them, and only then are the events published, round-robin over 6 partitions (3 per worker with two). Jobs per
second run from the first publish to the last job's ``finished_at`` in the database.

Each worker runs one job at a time (``WORKER_CONCURRENCY=1``): Pillow releases the GIL while filtering and
encoding, so one worker at the default concurrency already spreads over both cores of a 2-core machine, and
the figure would no longer say what a second process adds. On 2 cores the broker, the database and this
process share the CPUs with the workers, so 2 workers cannot reach 2x here.
"""

from __future__ import annotations

import datetime as dt

from core.jobs import JobStore
from core.schema import upgrade
from schemas import FilterName
from scripts.bench.context import BenchError, Context
from scripts.bench.results import Benchmark, FigureSpec, Plan, Run
from scripts.bench.servers import WORKER_LOG_LEVEL, worker_processes
from scripts.bench.workload import photo_png, publish_uploads, store_uploads, wait_until_done

NAME = "scale_out"
FILTER = FilterName.BLUR
PARTITIONS = 6
CONCURRENCY_PER_WORKER = 1
ONE = "1 worker jobs/s"
TWO = "2 workers jobs/s"
DONE_TIMEOUT_S = 300.0


def sizes(quick: bool) -> tuple[int, int]:
    """(jobs, image side in pixels)."""
    return (12, 256) if quick else (36, 1024)


def plan(quick: bool) -> Plan:
    jobs, side_px = sizes(quick)
    return Plan(
        figures=(FigureSpec(ONE, "jobs/s"), FigureSpec(TWO, "jobs/s", (ONE,))),
        settings={
            "jobs": jobs,
            "image": f"{side_px}x{side_px} PNG (gradients, noise, shapes), filter {FILTER.value}",
            "partitions": PARTITIONS,
            "worker": f"image-worker --log-level {WORKER_LOG_LEVEL}, WORKER_CONCURRENCY={CONCURRENCY_PER_WORKER}",
            "database": "SQLite (WAL) in a temp dir, fresh per measurement",
        },
        notes=(
            "2 workers share this machine's cores with the broker, SQLite and the bench: on 2 cores expect less "
            "than 2.0x (a --quick run is too short to tell).",
        ),
    )


async def measure(ctx: Context) -> Run:
    jobs, side_px = sizes(ctx.quick)
    data = photo_png(side_px)
    values: dict[str, float] = {}
    for workers, figure in ((1, ONE), (2, TWO)):
        values[figure] = await _jobs_per_s(ctx, workers, jobs, data)
        ctx.say(NAME, f"{workers} worker(s): {values[figure]:.2f} jobs/s ({jobs} jobs)")
    return Run(values)


async def _jobs_per_s(ctx: Context, workers: int, count: int, data: bytes) -> float:
    settings = ctx.fresh_settings(NAME, topic_partitions=PARTITIONS, worker_concurrency=CONCURRENCY_PER_WORKER)
    uploads = await store_uploads(settings, count, data)
    jobs = JobStore.from_url(settings.database_url)
    await upgrade(jobs.engine)
    try:
        async with worker_processes(settings, ctx.folder(settings), workers):
            started = dt.datetime.now(dt.UTC)
            await publish_uploads(settings, uploads, FILTER)
            done = await wait_until_done(jobs, DONE_TIMEOUT_S, count=count)
    finally:
        await jobs.close()
    elapsed_s = (max(job.finished_at for job in done.values()) - started).total_seconds()
    if elapsed_s <= 0:
        raise BenchError(f"jobs finished before they were published ({elapsed_s:.3f} s): clocks disagree")
    return count / elapsed_s


BENCHMARK = Benchmark(NAME, "CPU-bound jobs, 1 then 2 image-worker processes", plan, measure)
