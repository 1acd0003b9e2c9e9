"""What the benchmarks feed the pipeline: uploaded images and their events, and how to know they are handled.

Events go to the partitions round-robin (still keyed by image id) so every partition holds the same number:
with keys alone a 6-partition topic is filled unevenly, and the fullest partition would decide when a
partition-bound consumer or a pair of workers finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import io
import logging
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from PIL import Image, ImageDraw
from sqlalchemy import select

from consumer.retry import RecordHandler
from core.blobs import open_blob_store
from core.jobs import JobStatus, JobStore
from core.kafka_connection import kafka_connection
from core.settings import Settings
from core.tables import jobs_table
from core.topics import ensure_topics
from schemas import BlobSource, FilterName, ImageProcessEvent, encode_event, event_headers
from scripts.bench.context import BenchError

BLOB_WRITES_IN_PARALLEL = 16


@contextlib.contextmanager
def quiet_aiokafka() -> Iterator[None]:
    """Silence aiokafka's retry warnings while setting up (not while measuring).

    A topic created a moment ago answers NotLeaderForPartition for a while even after its metadata names the
    leaders, and a fresh broker has no group coordinator for a second; aiokafka retries both and logs each try.
    """
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def tiny_png() -> bytes:
    """A 16x16 PNG: a job whose image work is negligible, so the pipeline's own cost shows."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 160, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def photo_png(size_px: int) -> bytes:
    """A square PNG with gradients, noise and shapes: decoding, filtering and encoding it costs real CPU."""
    image = Image.radial_gradient("L").resize((size_px, size_px)).convert("RGB")
    image = Image.blend(image, Image.effect_noise((size_px, size_px), 40).convert("RGB"), 0.3)
    draw = ImageDraw.Draw(image)
    for step in range(0, size_px, max(size_px // 16, 1)):
        draw.ellipse((step, step // 2, step + size_px // 8, step // 2 + size_px // 11), fill=(step % 255, 120, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class Upload:
    """An image already in the blob store, as the API leaves it before publishing the event."""

    image_id: uuid.UUID
    source: BlobSource


async def store_uploads(settings: Settings, count: int, data: bytes, *, write_blobs: bool = True) -> list[Upload]:
    """``count`` uploads of ``data``; ``write_blobs=False`` only names them (for consumers that never read them)."""
    blobs = open_blob_store(settings)
    digest = hashlib.sha256(data).hexdigest()
    uploads = []
    for _ in range(count):
        image_id = uuid.uuid4()
        uploads.append(
            Upload(image_id, BlobSource(key=blobs.upload_key(str(image_id)), size_bytes=len(data), sha256=digest))
        )
    if write_blobs:
        for start in range(0, count, BLOB_WRITES_IN_PARALLEL):
            batch = uploads[start : start + BLOB_WRITES_IN_PARALLEL]
            await asyncio.gather(*(blobs.put(upload.source.key, data) for upload in batch))
    return uploads


async def create_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the settings' topics and wait until every partition has a leader.

    A producer that writes to a topic the moment it was created gets NotLeaderForPartition and retries: harmless,
    but it would be timed (and logged) as part of the figure.
    """
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(**kafka_connection(settings))
    await admin.start()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                [topic] = await admin.describe_topics([settings.images_topic])
                leaders = [partition["leader"] for partition in topic["partitions"]]
                if len(leaders) == settings.topic_partitions and all(leader >= 0 for leader in leaders):
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise BenchError(f"topic {settings.images_topic} has no leaders after {timeout_s:g} s") from None
    finally:
        await admin.close()


async def warm_up_broker(bootstrap_servers: str, scratch: Path) -> None:
    """Commit one offset in a throwaway group, so the broker creates ``__consumer_offsets`` now.

    On a fresh broker the first group to commit waits seconds for that topic; without this warm-up the first
    measurement of the first comparison would carry that wait.
    """
    settings = Settings(
        kafka_bootstrap_servers=bootstrap_servers,
        images_topic="bench-warm-up",
        dlq_topic="bench-warm-up.dlq",
        topic_partitions=1,
        consumer_group=f"bench-warm-up-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{scratch / 'warm-up.db'}",
        storage_dir=scratch / "warm-up",
    )
    await create_topics(settings)
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings), group_id=settings.consumer_group, enable_auto_commit=False
    )
    with quiet_aiokafka():
        await consumer.start()
        try:
            partition = TopicPartition(settings.images_topic, 0)
            consumer.assign([partition])
            await consumer.commit({partition: 0})
        finally:
            await consumer.stop()


async def publish_uploads(
    settings: Settings, uploads: list[Upload], image_filter: FilterName, *, repeats: int = 1
) -> None:
    """Append ``repeats`` ``image_process`` events per upload (its partition chosen round-robin over the uploads,
    each round of events in upload order) and wait for the acks."""
    await create_topics(settings)
    producer = AIOKafkaProducer(**kafka_connection(settings), enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    try:
        with quiet_aiokafka():
            acks = []
            for index, upload in [pair for _ in range(repeats) for pair in enumerate(uploads)]:
                event = ImageProcessEvent(
                    event_id=uuid.uuid4(),
                    image_id=upload.image_id,
                    source=upload.source,
                    filter=image_filter,
                    requested_at=dt.datetime.now(dt.UTC),
                )
                key, value, headers = str(upload.image_id).encode(), encode_event(event), event_headers(event)
                partition = index % settings.topic_partitions
                acks.append(
                    await producer.send(
                        settings.images_topic, key=key, value=value, headers=headers, partition=partition
                    )
                )
            await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def prefill(
    settings: Settings,
    count: int,
    data: bytes,
    image_filter: FilterName,
    *,
    write_blobs: bool = True,
    repeats: int = 1,
) -> None:
    """Store ``count`` uploads and publish ``repeats`` events for each: a topic full of work before the consumer
    starts (with ``repeats`` > 1, every key comes back that many times, as reprocessing would)."""
    uploads = await store_uploads(settings, count, data, write_blobs=write_blobs)
    await publish_uploads(settings, uploads, image_filter, repeats=repeats)


class CountingHandler:
    """Wraps a record handler and sets :attr:`all_handled` once ``target`` records were handled.

    The figure's clock stops on that event, not on a poll, so the poll period cannot round it. ``first_at`` and
    ``last_at`` (``time.perf_counter()``) bound the records' flow without the group join before it.
    """

    def __init__(self, inner: RecordHandler, target: int) -> None:
        self.inner = inner
        self.target = target
        self.handled = 0
        self.all_handled = asyncio.Event()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.same_key_overlaps = 0  # records that started while another of their key ran: must stay 0
        self._running: set[bytes | None] = set()

    async def handle(self, record: ConsumerRecord, attempt: int) -> str:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        if record.key in self._running:
            self.same_key_overlaps += 1
        self._running.add(record.key)
        try:
            outcome = await self.inner.handle(record, attempt)
        finally:
            self._running.discard(record.key)
        self.handled += 1
        if self.handled >= self.target:
            self.last_at = time.perf_counter()
            self.all_handled.set()
        return outcome

    async def record_failure(self, record: ConsumerRecord, error: BaseException, attempts: int) -> None:
        await self.inner.record_failure(record, error, attempts)


class WaitingHandler:
    """Handles a record by waiting ``job_s``, like a job that only waits on I/O: what is left is how the consumer
    schedules records (no database, no image work to share the core with)."""

    def __init__(self, job_s: float) -> None:
        self.job_s = job_s

    async def handle(self, record: ConsumerRecord, attempt: int) -> str:
        await asyncio.sleep(self.job_s)
        return "done"

    async def record_failure(self, record: ConsumerRecord, error: BaseException, attempts: int) -> None:
        return None


class NoopHandler:
    """Handles a record by doing nothing: what is left is the consumer engine's own cost."""

    async def handle(self, record: ConsumerRecord, attempt: int) -> str:
        return "done"

    async def record_failure(self, record: ConsumerRecord, error: BaseException, attempts: int) -> None:
        return None


async def wait_for(event: asyncio.Event, timeout_s: float, what: str) -> None:
    """Wait for ``event``; raise :class:`BenchError` naming ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        raise BenchError(f"{what} did not happen within {timeout_s:g} s") from None


@dataclass(frozen=True, slots=True)
class Finished:
    """A done job's timestamps as the worker wrote them (UTC)."""

    image_id: str
    started_at: dt.datetime
    finished_at: dt.datetime


async def finished_jobs(jobs: JobStore) -> dict[str, Finished]:
    """Every job marked done, read in one query (cheap enough to repeat while workers write)."""
    columns = (jobs_table.c.image_id, jobs_table.c.started_at, jobs_table.c.finished_at)
    statement = select(*columns).where(jobs_table.c.status == JobStatus.DONE.value)
    async with jobs.engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return {row[0]: Finished(row[0], _utc(row[1]), _utc(row[2])) for row in rows}


async def wait_until_done(
    jobs: JobStore, timeout_s: float, *, count: int = 0, ids: Collection[str] = (), poll_s: float = 0.1
) -> dict[str, Finished]:
    """Poll the database until ``count`` jobs, and every job in ``ids``, are done.

    The figures use the rows' timestamps, not the moment the poll noticed, so the poll period does not round them.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        done = await finished_jobs(jobs)
        missing = [image_id for image_id in ids if image_id not in done]
        if len(done) >= count and not missing:
            return done
        if loop.time() >= deadline:
            raise BenchError(f"{len(done)} jobs done after {timeout_s:g} s; {len(missing)} awaited ones are not")
        await asyncio.sleep(poll_s)


def _utc(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        raise BenchError("a done job without started_at/finished_at")
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)  # SQLite drops the zone
