"""end_to_end: from ``POST /images`` to ``done`` through a real image-api and one real image-worker.

The load generator uploads 16x16 images at a steady open-loop rate the worker can keep up with and records,
for each accepted job, its id and the wall-clock time the request was due. Once all of them are done, each
job's latency is its row's ``finished_at`` (written by the worker in the transaction that marks it done) minus
that time: both clocks are this machine's, and nothing polls the API meanwhile. Polling ``GET /images/{id}``
instead would put a stream of extra requests and database reads onto the same two cores while the figure is
taken, and round every latency up to the poll period. Baselines are the same requests' ``POST -> 202``
latency (what the worker adds) and the offered rate: the jobs' completion rate, from the first finished to the
last, matches it while the pipeline keeps up.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.jobs import JobStore
from scripts.bench.context import BenchError, Context
from scripts.bench.loadgen import LoadSpec, run_loadgen
from scripts.bench.results import Benchmark, FigureSpec, Plan, Run
from scripts.bench.servers import WORKER_LOG_LEVEL, api_server, worker_processes
from scripts.bench.stats import latency_summary_ms
from scripts.bench.workload import wait_until_done

NAME = "end_to_end"
FILTER = "invert"
OFFERED = "offered uploads/s"
DONE = "done jobs/s"
DONE_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Sizes:
    rate_per_s: float
    duration_s: float
    warmup_s: float


def sizes(quick: bool) -> Sizes:
    return Sizes(5.0, 2.0, 0.5) if quick else Sizes(20.0, 10.0, 1.0)


def plan(quick: bool) -> Plan:
    size = sizes(quick)
    return Plan(
        figures=(
            FigureSpec(OFFERED, "req/s"),
            FigureSpec(DONE, "jobs/s", (OFFERED,)),
            FigureSpec("POST->202 p50", "ms", higher_is_better=False),
            FigureSpec("POST->202 p99", "ms", higher_is_better=False),
            FigureSpec("POST->done p50", "ms", ("POST->202 p50",), higher_is_better=False),
            FigureSpec("POST->done p99", "ms", ("POST->202 p99",), higher_is_better=False),
        ),
        settings={
            "load": f"open loop, multipart upload of a 16x16 PNG, filter {FILTER}, {size.rate_per_s:g}/s for "
            f"{size.duration_s:g} s after {size.warmup_s:g} s warm-up (warm-up jobs are not measured)",
            "api": "image-api, SQLite (WAL) in a temp dir",
            "worker": f"one image-worker, default WORKER_CONCURRENCY, --log-level {WORKER_LOG_LEVEL}",
            "latency": "job row finished_at minus the wall-clock time the POST was due",
        },
    )


async def measure(ctx: Context) -> Run:
    size = sizes(ctx.quick)
    settings = ctx.fresh_settings(NAME)
    jobs = JobStore.from_url(settings.database_url)
    notes: list[str] = []
    try:
        async with (
            api_server(settings, ctx.folder(settings)) as api_url,
            worker_processes(settings, ctx.folder(settings), 1),
        ):
            spec = LoadSpec(
                f"{api_url}/images",
                connections=32,
                duration_s=size.duration_s,
                warmup_s=size.warmup_s,
                rate_per_s=size.rate_per_s,
                body="upload",
                filter=FILTER,
                record_ids=True,
            )
            report = await run_loadgen(spec, size.warmup_s + size.duration_s + 60)
            if not report.ids:
                raise BenchError(f"no upload was accepted ({report.errors})")
            if report.errors:
                notes.append(f"{len(report.ids)} accepted, errors {report.errors}")
            ctx.say(NAME, f"{len(report.ids)} uploads accepted, waiting for them to be done")
            done = await wait_until_done(jobs, DONE_TIMEOUT_S, ids=[image_id for image_id, _, _ in report.ids])
    finally:
        await jobs.close()
    # wait_until_done returned, so every recorded id has its row.
    to_done = [done[image_id].finished_at.timestamp() - due_at for image_id, due_at, _ in report.ids]
    finished = sorted(done[image_id].finished_at.timestamp() for image_id, _, _ in report.ids)
    if len(finished) < 2 or finished[-1] <= finished[0]:
        raise BenchError("too few jobs to tell a rate: raise the rate or the duration")
    summary = latency_summary_ms(to_done)
    values = {
        OFFERED: size.rate_per_s,
        DONE: (len(finished) - 1) / (finished[-1] - finished[0]),  # keeping up: the offered rate
        "POST->202 p50": report.latency_ms["p50"],
        "POST->202 p99": report.latency_ms["p99"],
        "POST->done p50": summary["p50"],
        "POST->done p99": summary["p99"],
    }
    ctx.say(NAME, f"POST->done p50 {summary['p50']:.0f} ms, p99 {summary['p99']:.0f} ms")
    return Run(values, notes)


BENCHMARK = Benchmark(NAME, "POST /images to done through image-api and one image-worker", plan, measure)
