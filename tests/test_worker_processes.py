"""Worker processes as operators run them: several per group, SIGTERM, kill -9; nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from PIL import Image

from core.blobs import open_blob_store
from core.jobs import JobStatus, JobStore
from core.settings import Settings
from tests.support.events import as_record, url_event
from tests.support.image_server import ImageServer
from tests.support.images import png_bytes
from tests.support.processes import WorkerProcess
from tests.support.settings import worker_test_settings
from tests.support.worker import (
    count_jobs,
    count_processed,
    eventually,
    offsets_all_committed,
    produce,
)

pytestmark = pytest.mark.integration

SHUTDOWN_TIMEOUT_S = 20.0


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return worker_test_settings(kafka_bootstrap, tmp_path, topic_partitions=6, shutdown_timeout_s=SHUTDOWN_TIMEOUT_S)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start_worker(workers: list[WorkerProcess], settings: Settings, tmp_path: Path) -> WorkerProcess:
    worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log")
    workers.append(worker)
    return worker


async def group_members(settings: Settings) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [description] = await admin.describe_consumer_groups([settings.consumer_group])
    except KafkaError:  # e.g. the group coordinator is still being elected
        return 0
    finally:
        await admin.close()
    group = description.groups[0]
    return len(group[5]) if group[2] == "Stable" else 0


async def test_two_workers_process_200_jobs_exactly_once(
    worker_settings: Settings, images: ImageServer, jobs: JobStore, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    for _ in range(2):
        start_worker(workers, worker_settings, tmp_path)
    await eventually(lambda: _members_are(worker_settings, 2), what="both workers in the group")
    events = [url_event(images.url(f"/img/{seed}.png"), "grayscale") for seed in range(200)]
    await produce(worker_settings, map(as_record, events))

    await eventually(lambda: _done_count_is(jobs, 200), timeout_s=120, what="200 jobs done")
    await eventually(lambda: offsets_all_committed(worker_settings), what="offsets committed")

    assert await count_processed(jobs) == 200
    assert sum(images.hits.values()) == 200, "each job executed exactly once"
    blobs = open_blob_store(worker_settings)
    for seed in (0, 117, 199):
        result = Image.open(io.BytesIO(await blobs.get(blobs.result_key(str(events[seed].image_id)))))
        assert result.tobytes() == Image.open(io.BytesIO(png_bytes(seed=seed))).convert("L").tobytes()
    logs = "".join(worker.log() for worker in workers)
    assert logs.count("Processing image") == 200
    assert all(logs.count(f"/img/{seed}.png with filter grayscale... Done") == 1 for seed in (0, 99, 199))


async def test_sigterm_finishes_running_jobs_commits_and_exits_0(
    worker_settings: Settings, images: ImageServer, jobs: JobStore, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker(workers, worker_settings, tmp_path)
    events = [url_event(images.url(f"/img/{seed}.png?delay=2"), "emboss") for seed in range(4)]
    await produce(worker_settings, map(as_record, events))
    for seed in range(4):
        await images.wait_for_hits(f"/img/{seed}.png", 1)

    started = time.monotonic()
    worker.terminate()
    exit_code = await asyncio.to_thread(worker.wait, SHUTDOWN_TIMEOUT_S)
    elapsed_s = time.monotonic() - started

    assert exit_code == 0, worker.log()
    assert elapsed_s < SHUTDOWN_TIMEOUT_S
    assert await count_jobs(jobs, JobStatus.DONE) == 4, "running jobs finish before the worker leaves"
    assert await offsets_all_committed(worker_settings)


async def test_second_signal_exits_at_once_leaving_work_for_redelivery(
    worker_settings: Settings, images: ImageServer, jobs: JobStore, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker(workers, worker_settings, tmp_path)
    await produce(worker_settings, [as_record(url_event(images.url("/img/1.png?delay=60"), "blur"))])
    await images.wait_for_hits("/img/1.png", 1)

    worker.terminate()
    await eventually(lambda: _logged(worker, "finishing running jobs"), what="first signal handled")
    worker.terminate()
    exit_code = await asyncio.to_thread(worker.wait, 10.0)

    assert exit_code == 130
    assert await count_jobs(jobs, JobStatus.DONE) == 0
    assert not await offsets_all_committed(worker_settings), "the interrupted job stays uncommitted"


async def test_kill_9_mid_work_loses_nothing_and_records_nothing_twice(
    worker_settings: Settings, images: ImageServer, jobs: JobStore, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    events = [url_event(images.url(f"/img/{seed}.png?delay=0.3"), "contour") for seed in range(40)]
    await produce(worker_settings, map(as_record, events))
    first = start_worker(workers, worker_settings, tmp_path)
    await eventually(lambda: _done_at_least(jobs, 10), what="some jobs done")

    first.kill()
    assert await count_jobs(jobs, JobStatus.DONE) < 40, "the kill must land mid-work"
    start_worker(workers, worker_settings, tmp_path)

    await eventually(lambda: _done_count_is(jobs, 40), timeout_s=120, what="all jobs done after restart")
    await eventually(lambda: offsets_all_committed(worker_settings), what="offsets committed")
    assert await count_processed(jobs) == 40, "no job recorded twice"
    executions = sum(images.hits.values())
    assert executions >= 40
    print(f"kill -9: 40 jobs, {executions - 40} re-executed after the crash")


async def test_second_worker_joining_loses_and_duplicates_nothing(
    worker_settings: Settings, images: ImageServer, jobs: JobStore, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    events = [url_event(images.url(f"/img/{seed}.png?delay=0.2"), "sharpen") for seed in range(60)]
    await produce(worker_settings, map(as_record, events))
    start_worker(workers, worker_settings, tmp_path)
    await eventually(lambda: _done_at_least(jobs, 5), what="first worker busy")

    start_worker(workers, worker_settings, tmp_path)

    await eventually(lambda: _done_count_is(jobs, 60), timeout_s=120, what="all jobs done")
    await eventually(lambda: offsets_all_committed(worker_settings), what="offsets committed")
    assert await count_processed(jobs) == 60
    assert sum(images.hits.values()) == 60, "a clean hand-over re-executes nothing"
    assert any("assigned" in worker.log() and "revoked" in worker.log() for worker in workers)


async def test_a_job_cut_by_kill_9_shows_two_executions(
    worker_settings: Settings, images: ImageServer, jobs: JobStore, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    event = url_event(images.url("/img/3.png?delay=2"), "emboss")
    await produce(worker_settings, [as_record(event)])
    first = start_worker(workers, worker_settings, tmp_path)
    await images.wait_for_hits("/img/3.png", 1)  # the job is running: its image is being fetched

    first.kill()
    start_worker(workers, worker_settings, tmp_path)
    await eventually(lambda: _done_count_is(jobs, 1), timeout_s=60, what="the job done after the restart")

    job = await jobs.get(str(event.image_id))
    assert job is not None
    assert (job.executions, job.attempts) == (2, 1), "the status tells that the job ran twice"
    assert images.hits["/img/3.png"] == 2


async def _logged(worker: WorkerProcess, text: str) -> bool:
    return text in worker.log()


async def _members_are(settings: Settings, count: int) -> bool:
    return await group_members(settings) == count


async def _done_count_is(jobs: JobStore, count: int) -> bool:
    return await count_jobs(jobs, JobStatus.DONE) == count


async def _done_at_least(jobs: JobStore, count: int) -> bool:
    return await count_jobs(jobs, JobStatus.DONE) >= count
