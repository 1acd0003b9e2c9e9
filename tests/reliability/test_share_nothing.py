"""Scenario 15: processes that share nothing but Kafka, PostgreSQL and the object store.

A three-broker cluster (replication factor 3, ``min.insync.replicas`` 2), PostgreSQL, the S3 server; an API with
``--workers 2`` and three workers, each process in an empty working directory of its own with a ``STORAGE_DIR`` of
its own. Half the jobs are uploads, half URLs. Mid-run one worker is killed with ``kill -9`` and the leader of the
busiest partition is killed too. Every accepted job must be done once, its result must download through the API,
and no process may have written a file of its own.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select

from core.clients import running
from core.database import create_engine
from core.jobs import JobStore
from core.kafka_connection import kafka_connection
from core.schema import upgrade
from core.settings import Settings
from core.tables import jobs_table
from core.topics import topic_partitions
from scripts.kafka.local import KafkaCluster
from tests.reliability.cluster import REPLICAS, busiest_partition_leader, in_sync
from tests.reliability.harness import Figures, count_figures, drain, free_port, record_figures, wait_until_ready
from tests.support.database import empty_postgres_database
from tests.support.image_server import ImageServer
from tests.support.images import png_bytes
from tests.support.object_store import S3Server
from tests.support.processes import ApiProcess, ServiceProcess, WorkerProcess
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually

JOBS = 300
WORKERS = 3
API_PROCESSES = 2
RECOVERY_TIMEOUT_S = 90.0
SUBMIT_TRIES = 30


async def fresh_database(server_url: str) -> str:
    """A migrated database of this scenario's own on the session's PostgreSQL server (its figures count whole
    tables)."""
    url = await empty_postgres_database(server_url, "share_nothing")
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url


async def consumer_lag(settings: Settings) -> int:
    """Events on the main topic the workers' group has not committed past."""
    async with running(AIOKafkaAdminClient(**kafka_connection(settings))) as admin:
        committed = await admin.list_consumer_group_offsets(settings.consumer_group)
    partitions = await topic_partitions(settings, settings.images_topic)
    async with running(AIOKafkaConsumer(**kafka_connection(settings))) as consumer:
        ends = await consumer.end_offsets(partitions)
    return sum(max(0, end - (committed[tp].offset if tp in committed else 0)) for tp, end in ends.items())


async def test_processes_sharing_only_kafka_postgres_and_s3_lose_nothing(
    own_cluster: KafkaCluster, postgres_url: str, s3: S3Server, images: ImageServer, tmp_path: Path
) -> None:
    settings = worker_test_settings(
        own_cluster.bootstrap_servers,
        tmp_path,
        topic_partitions=6,
        topic_replication_factor=REPLICAS,
        database_url=await fresh_database(postgres_url),
        max_attempts=3,
        send_timeout_s=5.0,
        shutdown_timeout_s=15.0,
        **s3.settings(),
    )
    homes: list[Path] = []

    def home(name: str) -> tuple[Settings, Path]:
        """An empty working directory and STORAGE_DIR for one process: nothing on disk is shared."""
        folder = tmp_path / "hosts" / name
        (folder / "cwd").mkdir(parents=True)
        homes.append(folder)
        return Settings.model_validate({**settings.model_dump(), "storage_dir": folder / "storage"}), folder / "cwd"

    processes: list[ServiceProcess] = []
    try:
        api_settings, api_cwd = home("api")
        api = ApiProcess(api_settings, tmp_path / "api.log", free_port(), "--workers", str(API_PROCESSES), cwd=api_cwd)
        processes.append(api)
        workers = []
        for number in range(WORKERS):
            worker_settings, worker_cwd = home(f"worker-{number}")
            workers.append(WorkerProcess(worker_settings, tmp_path / f"worker-{number}.log", cwd=worker_cwd))
        processes += workers
        await wait_until_ready(api.base_url)
        await eventually(lambda: in_sync(settings), timeout_s=RECOVERY_TIMEOUT_S, what="every replica in sync")

        accepted: list[str] = []
        statuses: dict[int, int] = {}
        refused_at: list[float] = []  # when 503s were answered: the API refuses while the partition leader moves
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:

            async def submit(number: int) -> None:
                """One job, retried after a 503 as a client should (its Idempotency-Key makes that safe)."""
                headers = {"Idempotency-Key": f"job-{number}"}
                for _ in range(SUBMIT_TRIES):
                    if number % 2:
                        job = {"url": images.url(f"/img/{number}.png"), "filter": "invert"}
                        answer = await client.post("/images", json=job, headers=headers)
                    else:
                        files = {"file": (f"{number}.png", png_bytes((24, 16), seed=number), "image/png")}
                        answer = await client.post("/images", files=files, data={"filter": "invert"}, headers=headers)
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                    if answer.status_code != 503:
                        break
                    refused_at.append(time.monotonic())
                    await asyncio.sleep(min(float(answer.headers["retry-after"]), 1.0))  # the client's pace
                if answer.status_code == 202:
                    accepted.append(answer.json()["id"])

            async def load() -> None:
                pending = []
                for number in range(JOBS):
                    pending.append(asyncio.create_task(submit(number)))
                    await asyncio.sleep(1 / 40)  # 40 jobs/s: the faults land mid-run
                await asyncio.gather(*pending)

            loading = asyncio.create_task(load())
            await asyncio.sleep(JOBS / 40 / 3)
            workers[0].kill()
            victim = await busiest_partition_leader(settings)
            await asyncio.to_thread(own_cluster.node(victim).kill)
            await loading

            drain_s = await drain(settings, accepted, timeout_s=180)
            lag_since = time.monotonic()
            await eventually(lambda: _lag_is_zero(settings), timeout_s=60, what="consumer lag 0")
            lag_zero_s = drain_s + time.monotonic() - lag_since
            results = [await client.get(f"/images/{image_id}/result") for image_id in accepted]
        figures: Figures = await count_figures(settings, accepted, images, drain_s=drain_s)
        executed_twice = await _executed_twice(settings)
    finally:
        for process in processes:
            process.stop()

    line = record_figures(
        "share-nothing",
        figures,
        executed_twice_db=executed_twice,
        lag_zero_s=lag_zero_s,
        rejected_503=statuses.get(503, 0),
        refusing_s=max(refused_at) - min(refused_at) if refused_at else 0.0,
        killed=f"worker+broker-{victim}",
        store="s3",
    )
    assert set(statuses) <= {202, 503}, f"{statuses}; {line}"
    assert len(accepted) == JOBS, f"every job accepted in the end; {line}"
    assert figures.lost == 0, line
    assert figures.recorded_twice == 0, line
    assert figures.done == figures.accepted, line
    assert [result.status_code for result in results] == [200] * len(results), line
    written = [path for folder in homes for path in folder.rglob("*") if path.is_file()]
    assert written == [], f"processes wrote files of their own: {written[:5]}"


async def _lag_is_zero(settings: Settings) -> bool:
    return await consumer_lag(settings) == 0


async def _executed_twice(settings: Settings) -> int:
    """Jobs whose work ran more than once (redelivered after the kill): allowed, and counted."""
    jobs = JobStore.from_url(settings.database_url)
    try:
        async with jobs.engine.connect() as connection:
            query = select(func.count()).where(jobs_table.c.executions > 1)
            return int((await connection.execute(query)).scalar_one())
    finally:
        await jobs.close()
