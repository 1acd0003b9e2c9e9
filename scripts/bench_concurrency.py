"""Benchmark: what key-ordered concurrency buys for I/O-bound jobs.

One worker consumes 100 ms I/O-bound jobs (uploads with ``JOB_EXTRA_DELAY_S=0.1``: a tiny filter plus a 100 ms
wait, as a slow download would be) from a 6-partition topic, at several concurrency levels. Each level is
measured in the same run, on a fresh topic, group and database, and reported as a ratio against concurrency 1
and against the ideal (concurrency / 0.1 s). Figures from a noisy machine are medians of ``--runs`` runs.

    .venv/bin/python -m scripts.bench_concurrency [--levels 1 8 32 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import io
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from aiokafka import AIOKafkaProducer
from PIL import Image

from consumer.handler import JobHandler
from consumer.worker import Worker
from core.blobs import BlobStore
from core.jobs import JobStore
from core.settings import Settings
from core.topics import ensure_topics
from schemas import BlobSource, FilterName, ImageProcessV1, encode_event
from scripts.kafka_local import KafkaNode

JOB_SECONDS = 0.1
PARTITIONS = 6
MIN_WALL_SECONDS = 3.0  # enough jobs per level that start-up and the last commit do not dominate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_concurrency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64], help="concurrency levels")
    parser.add_argument("--runs", type=int, default=3, help="runs per level; the median is reported")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch, _broker(Path(scratch)) as bootstrap:
        results = asyncio.run(_measure_all(bootstrap, Path(scratch), args.levels, args.runs))
    _report(results, args.runs)


@contextlib.contextmanager
def _broker(scratch: Path) -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    with KafkaNode(scratch / "kafka") as node:
        yield node.bootstrap_servers


async def _measure_all(bootstrap: str, scratch: Path, levels: list[int], runs: int) -> dict[int, list[float]]:
    results: dict[int, list[float]] = {level: [] for level in levels}
    for run in range(runs):
        for level in levels:
            rate = await _measure(bootstrap, scratch / f"{level}-{run}", level)
            results[level].append(rate)
            print(f"run {run + 1}/{runs} concurrency {level:>3}: {rate:8.1f} jobs/s", flush=True)
    return results


async def _measure(bootstrap: str, folder: Path, concurrency: int) -> float:
    """Jobs per second of one worker at ``concurrency``, from first poll to the last job done."""
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        images_topic=f"bench-{suffix}",
        dlq_topic=f"bench-{suffix}.dlq",
        topic_partitions=PARTITIONS,
        consumer_group=f"bench-{suffix}",
        database_url=f"sqlite:///{folder / 'jobs.db'}",
        storage_dir=folder / "blobs",
        worker_concurrency=concurrency,
        job_extra_delay_s=JOB_SECONDS,
    )
    jobs_count = max(12, int(MIN_WALL_SECONDS * concurrency / JOB_SECONDS))
    await _produce_uploads(settings, jobs_count)
    jobs = JobStore.from_url(settings.database_url)
    await jobs.create_schema()
    handler = JobHandler(settings, jobs, BlobStore(settings.storage_dir))
    worker = Worker(settings, handler)
    started = time.perf_counter()
    task = asyncio.create_task(worker.run())
    try:
        # A poll with a short period: the worker's own counter is read, so the database is not loaded by it.
        while _done(worker) < jobs_count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        elapsed_s = time.perf_counter() - started
    finally:
        worker.stop()
        await task
        await handler.aclose()
        await jobs.close()
    return jobs_count / elapsed_s


async def _produce_uploads(settings: Settings, count: int) -> None:
    await ensure_topics(settings)
    blobs = BlobStore(settings.storage_dir)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 160, 30)).save(buffer, format="PNG")
    data = buffer.getvalue()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        acks = []
        for _ in range(count):
            image_id = uuid.uuid4()
            source = BlobSource(key=blobs.upload_key(str(image_id)), size_bytes=len(data), sha256=_sha256(data))
            await blobs.put(source.key, data)
            event = ImageProcessV1(
                event_id=uuid.uuid4(),
                image_id=image_id,
                source=source,
                filter=FilterName.INVERT,
                requested_at=dt.datetime.now(dt.UTC),
            )
            acks.append(
                await producer.send(settings.images_topic, key=str(image_id).encode(), value=encode_event(event))
            )
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _done(worker: Worker) -> float:
    return worker.metrics.registry.get_sample_value("image_worker_records_total", {"outcome": "done"}) or 0.0


def _report(results: dict[int, list[float]], runs: int) -> None:
    baseline = statistics.median(results[min(results)])
    print(f"\n100 ms I/O-bound jobs, {PARTITIONS} partitions, one worker; median of {runs} run(s)")
    print(f"{'concurrency':>11} {'jobs/s':>9} {'vs c=' + str(min(results)):>9} {'ideal jobs/s':>13} {'of ideal':>9}")
    for level, rates in sorted(results.items()):
        rate = statistics.median(rates)
        ideal = level / JOB_SECONDS
        print(f"{level:>11} {rate:>9.1f} {rate / baseline:>8.1f}x {ideal:>13.0f} {rate / ideal:>8.0%}")


if __name__ == "__main__":
    main()
