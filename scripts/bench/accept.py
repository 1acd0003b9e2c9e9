"""accept: ``POST /images`` against the FastStream peer, the HTTP limit (a bare endpoint) and the broker limit.

Closed loop first: the load generator keeps ``connections`` requests in flight against the bare endpoint, the
FastStream peer (:mod:`scripts.bench.peer_app`) and a fresh image-api, which finds each one's peak; a raw aiokafka
loop (a plain idempotent producer: acks=all, the API's linger, no transactions) sends the same events from as many
tasks. Then open loop at half of the peer's peak, against image-api and the peer, for the latency a client sees at
the same offered rate when neither is saturated. The bare endpoint's figure is also the check of the load
generator: the others mean something only well below it.

Every request to image-api carries a new Idempotency-Key, so the key's look-up, the job row and the transactional
publish are all on the measured path.
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
from scripts.bench.loadgen import LoadReport, LoadSpec, run_loadgen
from scripts.bench.results import Benchmark, FigureSpec, Goal, Plan, Run
from scripts.bench.servers import UVICORN_OPTIONS, api_server, bare_server, peer_server
from scripts.bench.stats import latency_summary_ms
from scripts.bench.workload import create_topics, quiet_aiokafka

NAME = "accept"
FILTER = FilterName.GRAYSCALE
# A host name, not a literal address: both sides accept it without ALLOW_PRIVATE_URLS, and nothing fetches it.
IMAGE_URL = "https://images.example/cat.png"

BARE = "bare endpoint req/s"
PEER = "FastStream endpoint req/s"
RAW = "raw producer sends/s"
API = "image-api req/s"
API_TWO = "image-api --workers 2 req/s"
OPEN_RATE = "open-loop offered req/s"


@dataclass(frozen=True, slots=True)
class Sizes:
    connections: int
    duration_s: float
    warmup_s: float


def sizes(quick: bool) -> Sizes:
    return Sizes(8, 1.0, 0.3) if quick else Sizes(32, 6.0, 1.5)


def plan(quick: bool) -> Plan:
    size = sizes(quick)
    latency = [
        FigureSpec("bare p50", "ms", higher_is_better=False),
        FigureSpec("bare p99", "ms", higher_is_better=False),
        FigureSpec("FastStream p50", "ms", higher_is_better=False),
        FigureSpec("FastStream p99", "ms", higher_is_better=False),
        FigureSpec("raw producer p50", "ms", higher_is_better=False),
        FigureSpec("raw producer p99", "ms", higher_is_better=False),
        FigureSpec("image-api p50", "ms", ("FastStream p50", "bare p50"), higher_is_better=False),
        FigureSpec("image-api p99", "ms", ("FastStream p99", "bare p99"), higher_is_better=False),
        FigureSpec("image-api --workers 2 p50", "ms", higher_is_better=False),
        FigureSpec("image-api --workers 2 p99", "ms", higher_is_better=False),
        FigureSpec("FastStream open-loop p50", "ms", higher_is_better=False),
        FigureSpec("FastStream open-loop p99", "ms", higher_is_better=False),
        FigureSpec("image-api open-loop p50", "ms", ("FastStream open-loop p50",), higher_is_better=False),
        FigureSpec("image-api open-loop p99", "ms", ("FastStream open-loop p99",), higher_is_better=False),
    ]
    return Plan(
        figures=(
            FigureSpec(BARE, "req/s"),
            FigureSpec(PEER, "req/s", (BARE,)),
            FigureSpec(RAW, "sends/s"),
            FigureSpec(API, "req/s", (PEER, BARE, RAW)),
            FigureSpec(API_TWO, "req/s", (API, PEER)),
            FigureSpec(OPEN_RATE, "req/s", (PEER,)),
            *latency,
        ),
        goals=(
            Goal("image-api >= 1.0x the FastStream endpoint's throughput", API, ">=", 1.0, baseline=PEER),
            Goal(
                "image-api p99 <= the FastStream endpoint's at half its peak (open loop)",
                "image-api open-loop p99",
                "<=",
                1.0,
                baseline="FastStream open-loop p99",
            ),
        ),
        settings={
            "request": f'POST /images JSON {{"url": "{IMAGE_URL}", "filter": "{FILTER.value}"}}',
            "image-api": "a new Idempotency-Key per request (looked up, then derives the ids); the event in a "
            "group-committed Kafka transaction; the job row (SQLite, WAL, fresh per start) written before 202",
            "FastStream endpoint": "FastAPI with the same body model and event, published through FastStream's "
            "KafkaBroker (acks=all, enable_idempotence, linger_ms=5), awaiting the ack; no row, no key, no "
            "transaction, no auth",
            "connections": size.connections,
            "duration_s": size.duration_s,
            "warmup_s": size.warmup_s,
            "open_loop_rate": "half of the FastStream endpoint's closed-loop req/s of the same run",
            "uvicorn": " ".join(UVICORN_OPTIONS) + " (one process each, loop and http 'auto': uvloop, httptools)",
            "raw_producer_loop": f"{size.connections} tasks in the bench process on uvloop, each sending its next "
            "event once the last was acked (plain idempotent producer, acks=all, linger_ms=5, no transactions)",
            "load_generator": "python -m scripts.bench.loadgen (aiohttp on uvloop), its own process",
        },
        notes=(
            "The bare endpoint's req/s is also the check of the load generator: it is the most the generator "
            "could show on this machine.",
            "What image-api does that the peer does not: the Idempotency-Key look-up, the job row, the "
            "transaction (a 503 is never processed later), API-key auth and rate limits (both off here, as the "
            "peer has none).",
            "Closed-loop latencies are at saturation (all connections busy); the open-loop ones are what a client "
            "sees at half the peer's peak rate.",
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

    peer_settings = ctx.fresh_settings(NAME)
    await create_topics(peer_settings)
    async with peer_server(peer_settings, ctx.folder(peer_settings)) as peer_url:
        peer = await run_loadgen(_spec(f"{peer_url}/images", size), timeout_s)
        _record(values, notes, "FastStream", PEER, peer)
        ctx.say(NAME, f"FastStream endpoint: {peer.throughput_per_s:.0f} req/s, p99 {peer.latency_ms['p99']:.1f} ms")
        open_rate = peer.throughput_per_s / 2
        values[OPEN_RATE] = open_rate
        peer_open = await run_loadgen(_spec(f"{peer_url}/images", size, open_rate), timeout_s)
        _record(values, notes, "FastStream open-loop", None, peer_open)

    settings = ctx.fresh_settings(NAME)
    async with api_server(settings, ctx.folder(settings)) as api_url:
        api = await run_loadgen(_spec(f"{api_url}/images", size, keyed=True), timeout_s)
        _record(values, notes, "image-api", API, api)
        ctx.say(NAME, f"image-api: {api.throughput_per_s:.0f} req/s, p99 {api.latency_ms['p99']:.1f} ms")
        api_open = await run_loadgen(_spec(f"{api_url}/images", size, open_rate, keyed=True), timeout_s)
        _record(values, notes, "image-api open-loop", None, api_open)
    settings = ctx.fresh_settings(NAME)
    async with api_server(settings, ctx.folder(settings), processes=2) as api_url:
        api_two = await run_loadgen(_spec(f"{api_url}/images", size, keyed=True), timeout_s)
        _record(values, notes, "image-api --workers 2", API_TWO, api_two)
        ctx.say(NAME, f"image-api --workers 2: {api_two.throughput_per_s:.0f} req/s")
    ctx.say(
        NAME,
        f"open loop at {open_rate:.0f} req/s: image-api p99 {api_open.latency_ms['p99']:.1f} ms, "
        f"FastStream p99 {peer_open.latency_ms['p99']:.1f} ms",
    )

    rate, raw_p50, raw_p99 = await raw_producer_loop(ctx.fresh_settings(NAME), size)
    values |= {RAW: rate, "raw producer p50": raw_p50, "raw producer p99": raw_p99}
    ctx.say(NAME, f"raw producer: {rate:.0f} sends/s, p99 {raw_p99:.1f} ms")
    return Run(values, notes)


def _spec(url: str, size: Sizes, rate_per_s: float | None = None, *, keyed: bool = False) -> LoadSpec:
    return LoadSpec(
        url,
        connections=size.connections,
        duration_s=size.duration_s,
        warmup_s=size.warmup_s,
        rate_per_s=rate_per_s,
        image_url=IMAGE_URL,
        filter=FILTER.value,
        idempotency_keys=keyed,
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
            source=UrlSource.model_validate({"url": IMAGE_URL}),
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


BENCHMARK = Benchmark(
    NAME, "POST /images against the FastStream peer, the HTTP limit and the broker limit", plan, measure, uvloop=True
)
