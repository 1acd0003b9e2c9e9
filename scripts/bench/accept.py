"""accept: ``POST /images`` against the HTTP limit (a bare endpoint) and the broker limit (a raw producer loop).

Closed loop first: the load generator keeps ``connections`` requests in flight against the bare endpoint, then
against a fresh image-api, which finds each one's peak; a raw aiokafka loop (a plain idempotent producer:
acks=all, the API's linger, no transactions) sends the same events from as many tasks. Then open loop at half
of image-api's peak of the same run, against image-api and against the bare endpoint, for the latency a client
sees when the API is not saturated. The bare endpoint's figure is
also the check of the load generator: image-api's figure means something only well below it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from core.kafka_connection import kafka_connection
from core.settings import Settings
from schemas import FilterName, ImageProcessEvent, UrlSource, encode_event, event_headers
from scripts.bench.context import BenchError, Context
from scripts.bench.loadgen import DEFAULT_IMAGE_URL, LoadReport, LoadSpec, run_loadgen
from scripts.bench.results import Benchmark, FigureSpec, Goal, Plan, Run
from scripts.bench.servers import UVICORN_OPTIONS, api_server, bare_server
from scripts.bench.stats import latency_summary_ms
from scripts.bench.workload import create_topics, quiet_aiokafka

NAME = "accept"
FILTER = FilterName.GRAYSCALE

BARE = "bare endpoint req/s"
RAW = "raw producer sends/s"
API = "image-api req/s"
OPEN_RATE = "open-loop offered req/s"


@dataclass(frozen=True, slots=True)
class Sizes:
    connections: int
    duration_s: float
    warmup_s: float


def sizes(quick: bool) -> Sizes:
    return Sizes(8, 1.0, 0.3) if quick else Sizes(32, 4.0, 1.0)


def plan(quick: bool) -> Plan:
    size = sizes(quick)
    latency = [
        FigureSpec("bare p50", "ms", higher_is_better=False),
        FigureSpec("bare p99", "ms", higher_is_better=False),
        FigureSpec("raw producer p50", "ms", higher_is_better=False),
        FigureSpec("raw producer p99", "ms", higher_is_better=False),
        FigureSpec("image-api p50", "ms", ("bare p50", "raw producer p50"), higher_is_better=False),
        FigureSpec("image-api p99", "ms", ("bare p99", "raw producer p99"), higher_is_better=False),
        FigureSpec("bare open-loop p50", "ms", higher_is_better=False),
        FigureSpec("bare open-loop p99", "ms", higher_is_better=False),
        FigureSpec("image-api open-loop p50", "ms", ("bare open-loop p50",), higher_is_better=False),
        FigureSpec("image-api open-loop p99", "ms", ("bare open-loop p99",), higher_is_better=False),
    ]
    return Plan(
        figures=(
            FigureSpec(BARE, "req/s"),
            FigureSpec(RAW, "sends/s"),
            FigureSpec(API, "req/s", (BARE, RAW)),
            FigureSpec(OPEN_RATE, "req/s", (API,)),
            *latency,
        ),
        goals=(
            Goal("image-api >= 0.7 of the bare endpoint's throughput", API, ">=", 0.7, baseline=BARE),
            Goal("image-api p99 < 50 ms at half its peak (open loop)", "image-api open-loop p99", "<", 50.0),
        ),
        settings={
            "request": f'POST /images JSON {{"url": "{DEFAULT_IMAGE_URL}", "filter": "{FILTER.value}"}}',
            "connections": size.connections,
            "duration_s": size.duration_s,
            "warmup_s": size.warmup_s,
            "open_loop_rate": "half of image-api's closed-loop req/s of the same run",
            "uvicorn": " ".join(UVICORN_OPTIONS) + " (one process, loop and http 'auto': uvloop, httptools)",
            "producer": "a plain idempotent producer: acks=all, enable_idempotence, linger_ms=5, no transactions",
            "raw_producer_loop": f"{size.connections} tasks in the bench process on uvloop (as uvicorn runs "
            "image-api), each sending its next event once the last was acked",
            "database": "SQLite (WAL) in a temp dir, fresh per image-api start",
            "ALLOW_PRIVATE_URLS": True,
            "load_generator": "python -m scripts.bench.loadgen (aiohttp on uvloop), its own process",
        },
        notes=(
            "The bare endpoint's req/s is also the check of the load generator: it is the most the generator "
            "could show on this machine.",
            "Closed-loop latencies are at saturation (all connections busy); the open-loop ones are what a client "
            "sees at half the peak rate.",
        ),
    )


async def measure(ctx: Context) -> Run:
    size = sizes(ctx.quick)
    timeout_s = size.warmup_s + size.duration_s + 60
    values: dict[str, float] = {}
    notes: list[str] = []
    bare_folder = ctx.scratch / f"accept-bare-{ctx.run}"
    bare_folder.mkdir()
    async with bare_server(bare_folder) as bare_url:
        bare = await run_loadgen(_spec(f"{bare_url}/images", size), timeout_s)
        _record(values, notes, "bare", BARE, bare)
        notes.append(f"load generator used {bare.cpu_share:.2f} CPU cores against the bare endpoint")
        ctx.say(NAME, f"bare endpoint: {bare.throughput_per_s:.0f} req/s, p99 {bare.latency_ms['p99']:.1f} ms")

        settings = ctx.fresh_settings(NAME, allow_private_urls=True)
        async with api_server(settings, ctx.folder(settings)) as api_url:
            api = await run_loadgen(_spec(f"{api_url}/images", size), timeout_s)
        _record(values, notes, "image-api", API, api)
        ctx.say(NAME, f"image-api: {api.throughput_per_s:.0f} req/s, p99 {api.latency_ms['p99']:.1f} ms")

        rate, raw_p50, raw_p99 = await raw_producer_loop(ctx.fresh_settings(NAME), size)
        values |= {RAW: rate, "raw producer p50": raw_p50, "raw producer p99": raw_p99}
        ctx.say(NAME, f"raw producer: {rate:.0f} sends/s, p99 {raw_p99:.1f} ms")

        open_rate = api.throughput_per_s / 2
        values[OPEN_RATE] = open_rate
        settings = ctx.fresh_settings(NAME, allow_private_urls=True)
        async with api_server(settings, ctx.folder(settings)) as api_url:
            api_open = await run_loadgen(_spec(f"{api_url}/images", size, open_rate), timeout_s)
        _record(values, notes, "image-api open-loop", None, api_open)
        bare_open = await run_loadgen(_spec(f"{bare_url}/images", size, open_rate), timeout_s)
        _record(values, notes, "bare open-loop", None, bare_open)
        ctx.say(
            NAME,
            f"open loop at {open_rate:.0f} req/s: image-api p99 {api_open.latency_ms['p99']:.1f} ms, "
            f"bare p99 {bare_open.latency_ms['p99']:.1f} ms",
        )
    return Run(values, notes)


def _spec(url: str, size: Sizes, rate_per_s: float | None = None) -> LoadSpec:
    return LoadSpec(
        url,
        connections=size.connections,
        duration_s=size.duration_s,
        warmup_s=size.warmup_s,
        rate_per_s=rate_per_s,
        filter=FILTER.value,
    )


def _record(values: dict[str, float], notes: list[str], label: str, rate: str | None, report: LoadReport) -> None:
    if report.ok == 0:
        raise BenchError(f"{label}: no request succeeded ({report.errors})")
    if report.errors:
        notes.append(f"{label}: {report.ok} answered as expected, errors {report.errors}")
    if rate is not None:
        values[rate] = report.throughput_per_s
    values[f"{label} p50"] = report.latency_ms["p50"]
    values[f"{label} p99"] = report.latency_ms["p99"]


async def raw_producer_loop(settings: Settings, size: Sizes) -> tuple[float, float, float]:
    """Acked sends per second and p50/p99 ms of ``connections`` tasks, each sending its next event once acked."""
    await create_topics(settings)
    producer = AIOKafkaProducer(**kafka_connection(settings), enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    latencies: list[float] = []

    async def send(partition: int | None = None) -> None:
        event = ImageProcessEvent(
            event_id=uuid.uuid4(),
            image_id=uuid.uuid4(),
            source=UrlSource.model_validate({"url": DEFAULT_IMAGE_URL}),
            filter=FILTER,
            requested_at=dt.datetime.now(dt.UTC),
        )
        key, value, headers = str(event.image_id).encode(), encode_event(event), event_headers(event)
        await (await producer.send(settings.images_topic, key=key, value=value, headers=headers, partition=partition))

    async def sender(window: tuple[float, float]) -> None:
        while (sent := time.perf_counter()) < window[1]:
            await send()
            if window[0] <= (acked := time.perf_counter()) < window[1]:
                latencies.append(acked - sent)

    try:
        with quiet_aiokafka():  # connect to every partition's leader before the clock starts
            await asyncio.gather(*(send(partition) for partition in range(settings.topic_partitions)))
        started = time.perf_counter()
        window = (started + size.warmup_s, started + size.warmup_s + size.duration_s)
        await asyncio.gather(*(sender(window) for _ in range(size.connections)))
    finally:
        await producer.stop()
    summary = latency_summary_ms(latencies)
    return len(latencies) / size.duration_s, summary["p50"], summary["p99"]


BENCHMARK = Benchmark(NAME, "POST /images against the HTTP limit and the broker limit", plan, measure, uvloop=True)
