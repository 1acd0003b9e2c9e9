"""Helpers for worker tests: records straight onto the topic, a worker running in-process, polls with deadlines,
counts of jobs and offsets, topics with configs of their own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import GroupCoordinatorNotAvailableError
from sqlalchemy import func, select

from consumer.callbacks import CallbackConsumer
from consumer.handler import JobHandler
from consumer.metrics import WorkerMetrics
from consumer.retention import RetentionSweeper
from consumer.worker import Worker
from core.blobs import BlobStore, open_blob_store
from core.jobs import JobStatus, JobStore
from core.kafka_connection import kafka_connection
from core.schema import upgrade
from core.settings import Settings
from core.tables import jobs_table, processed_events_table
from core.topics import ensure_topics, topic_partitions
from schemas import event_headers
from tests.support.events import Record, url_event


async def produce(settings: Settings, records: Iterable[Record]) -> None:
    """Append records in order (one producer, so records of one key keep their order) and wait for the acks."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**kafka_connection(settings), enable_idempotence=True)
    await producer.start()
    try:
        acks = []
        for key, value in records:
            headers = event_headers(url_event("http://x.example/")) if value and value.startswith(b"{") else []
            acks.append(await producer.send(settings.images_topic, key=key, value=value, headers=headers))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0, what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what} not reached within {timeout_s} s") from None


async def count_jobs(jobs: JobStore, status: JobStatus) -> int:
    async with jobs.engine.connect() as connection:
        result = await connection.execute(select(func.count()).where(jobs_table.c.status == status.value))
        return int(result.scalar_one())


async def count_processed(jobs: JobStore) -> int:
    async with jobs.engine.connect() as connection:
        result = await connection.execute(select(func.count()).select_from(processed_events_table))
        return int(result.scalar_one())


async def committed_and_end_offsets(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    partitions = await topic_partitions(settings, settings.images_topic)
    admin = AIOKafkaAdminClient(**kafka_connection(settings))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.consumer_group)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**kafka_connection(settings))
    await consumer.start()
    try:
        end = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return (
        {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == settings.images_topic},
        {tp.partition: offset for tp, offset in end.items() if offset > 0},
    )


async def offsets_all_committed(settings: Settings) -> bool:
    try:
        committed, end = await committed_and_end_offsets(settings)
    except GroupCoordinatorNotAvailableError:
        return False  # a fresh broker has no offsets topic until the first group needs it: not yet
    return all(committed.get(partition) == offset for partition, offset in end.items())


SweeperFactory = Callable[[JobStore, BlobStore, WorkerMetrics], RetentionSweeper]


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, *, sweeper: SweeperFactory | None = None) -> AsyncIterator[Worker]:
    """A worker (with the real handler, and the retention sweeper ``sweeper`` makes, if given) consuming in this
    process until the block ends."""
    jobs = JobStore.from_url(settings.database_url)
    await upgrade(jobs.engine)
    await ensure_topics(settings)
    blobs = open_blob_store(settings)
    metrics = WorkerMetrics()
    handler = JobHandler(settings, jobs, blobs, metrics=metrics)
    retention = None if sweeper is None else sweeper(jobs, blobs, metrics)
    worker = Worker(settings, handler, metrics=metrics, sweeper=retention)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await task
        await handler.aclose()
        await jobs.close()


@contextlib.asynccontextmanager
async def running_callback_consumer(settings: Settings) -> AsyncIterator[WorkerMetrics]:
    """The callback consumer of a worker process, running in this process until the block ends; its metrics."""
    jobs = JobStore.from_url(settings.database_url)
    metrics = WorkerMetrics()
    consumer = CallbackConsumer(settings, jobs, metrics)
    task = asyncio.create_task(consumer.run())
    try:
        yield metrics
    finally:
        consumer.stop()
        await task
        await consumer.aclose()
        await jobs.close()


def partitions_of(settings: Settings) -> list[TopicPartition]:
    return [TopicPartition(settings.images_topic, p) for p in range(settings.topic_partitions)]


async def create_topic_with_configs(settings: Settings, name: str, configs: dict[str, str]) -> None:
    """Create ``name`` with the settings' partitions and replication and the given topic configs."""
    admin = AIOKafkaAdminClient(**kafka_connection(settings))
    await admin.start()
    try:
        topic = NewTopic(name, settings.topic_partitions, settings.topic_replication_factor, topic_configs=configs)
        response = await admin.create_topics([topic])
        assert all(error_code == 0 for _, error_code, *_ in response.topic_errors), response.topic_errors
    finally:
        await admin.close()


async def alter_topic_configs(settings: Settings, name: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(**kafka_connection(settings))
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)])
    finally:
        await admin.close()
