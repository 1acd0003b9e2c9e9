"""Job retention against a real broker and real workers, on each database: files after ``RESULT_TTL``, rows after
``JOB_TTL`` (410, not 404, to the owner), one sweep across workers through the database lease, replays skipped.

A job's age is made by the sweepers' clock, set past the TTLs, never by waiting for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select

from consumer.metrics import WorkerMetrics
from consumer.retention import RetentionSweeper
from consumer.worker import Worker
from core.api_keys import ApiKeyStore, Role
from core.blobs import BlobStore, ThumbnailKind, open_blob_store
from core.database import create_engine
from core.jobs import Expired, Job, JobStatus, JobStore, utc_now
from core.schema import upgrade
from core.settings import InvalidSettings, Settings, load_settings
from core.tables import callback_attempts_table, expired_jobs_table, jobs_table, processed_events_table
from tests.support.api import api_client
from tests.support.database import empty_postgres_database
from tests.support.events import as_record, url_event
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually, offsets_all_committed, produce, running_worker

pytestmark = pytest.mark.integration

Headers = dict[str, str]
RESULT_TTL_S = 3600
JOB_TTL_S = 2 * 3600
TOMBSTONE_TTL_S = 4 * 3600


@pytest.fixture
async def own_database_url(database_url: str) -> str:
    """``database_url``, or on PostgreSQL a migrated database of the test's own: a sweep deletes every job that is
    old enough, and the session's PostgreSQL database holds the other tests' jobs."""
    if database_url.startswith("sqlite"):
        return database_url
    url = await empty_postgres_database(database_url, "retention")
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path, own_database_url: str) -> Settings:
    return worker_test_settings(
        kafka_bootstrap,
        tmp_path,
        database_url=own_database_url,
        auth_disabled=False,
        result_ttl=RESULT_TTL_S,
        job_ttl=JOB_TTL_S,
        tombstone_ttl=TOMBSTONE_TTL_S,
        retention_sweep_interval_s=1.0,
    )


@pytest.fixture
async def api(worker_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(worker_settings) as client:
        yield client


@pytest.fixture
def blobs(worker_settings: Settings) -> BlobStore:
    return open_blob_store(worker_settings)


async def new_key(jobs: JobStore, *roles: Role) -> Headers:
    _, secret = await ApiKeyStore(jobs.engine).create(f"key-{uuid.uuid4().hex[:12]}", frozenset(roles))
    return {"Authorization": f"Bearer {secret}"}


def clock_at(seconds_from_now: float) -> dt.datetime:
    return utc_now() + dt.timedelta(seconds=seconds_from_now)


def sweeper(
    settings: Settings, jobs: JobStore, blobs: BlobStore, at_s: float, metrics: WorkerMetrics | None = None
) -> RetentionSweeper:
    """A sweeper whose clock runs ``at_s`` seconds ahead: every job finished now is that old to it."""
    return RetentionSweeper(settings, jobs, blobs, metrics or WorkerMetrics(), clock=lambda: clock_at(at_s))


def removed(metrics: WorkerMetrics, kind: str) -> float:
    return metrics.registry.get_sample_value("image_retention_removed_total", {"kind": kind}) or 0.0


def sweeps(metrics: WorkerMetrics) -> float:
    return metrics.registry.get_sample_value("image_retention_sweeps_total") or 0.0


def job_blob_keys(blobs: BlobStore, image_id: str) -> list[str]:
    return [
        blobs.result_key(image_id),
        blobs.thumbnail_key(image_id, ThumbnailKind.SOURCE),
        blobs.thumbnail_key(image_id, ThumbnailKind.RESULT),
        blobs.original_key(image_id),
    ]


async def rows_of(jobs: JobStore, image_id: str) -> tuple[int, int, int]:
    """How many jobs (with their callback attempts), processed-event and tombstone rows name ``image_id``."""
    async with jobs.engine.connect() as connection:
        counts = []
        for table in (jobs_table, callback_attempts_table, processed_events_table, expired_jobs_table):
            statement = select(func.count()).select_from(table).where(table.c.image_id == image_id)
            counts.append(int((await connection.execute(statement)).scalar_one()))
    return counts[0] + counts[1], counts[2], counts[3]


async def record_callback_attempt(jobs: JobStore, image_id: str) -> None:
    row = {
        "delivery_id": str(uuid.uuid4()),
        "attempt": 1,
        "image_id": image_id,
        "url": "https://example.com/hook",
        "attempted_at": utc_now(),
        "status_code": 200,
        "error": None,
        "delivered": True,
    }
    async with jobs.engine.begin() as connection:
        await connection.execute(insert(callback_attempts_table), row)


async def done_job(api: httpx.AsyncClient, settings: Settings, headers: Headers, url: str) -> str:
    """Submit a URL job and let a worker finish it; its id."""
    accepted = await api.post("/images", json={"url": url, "filter": "grayscale"}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    path: str = accepted.json()["status_url"]

    async def done() -> bool:
        answer = await api.get(path, headers=headers)
        return answer.status_code == 200 and answer.json()["status"] == "done"

    async with running_worker(settings):
        await eventually(done, timeout_s=30, what="the job done")
        await eventually(lambda: offsets_all_committed(settings), what="its offset committed")
    return path.rsplit("/", 1)[1]


async def test_a_job_past_its_ttl_has_its_files_and_row_deleted_and_answers_410_to_its_owner(
    api: httpx.AsyncClient, worker_settings: Settings, jobs: JobStore, blobs: BlobStore, images: ImageServer
) -> None:
    alice = await new_key(jobs, Role.SUBMIT, Role.READ)
    bob = await new_key(jobs, Role.SUBMIT, Role.READ)
    image_id = await done_job(api, worker_settings, alice, images.url("/img/1.png"))
    path = f"/images/{image_id}"
    assert all([await blobs.exists(key) for key in job_blob_keys(blobs, image_id)])
    await record_callback_attempt(jobs, image_id)
    assert await rows_of(jobs, image_id) == (2, 1, 0)

    before_ttl = await sweeper(worker_settings, jobs, blobs, RESULT_TTL_S - 60).sweep_once()
    assert before_ttl == Counter(), "nothing is due before RESULT_TTL (a Counter of zeros equals an empty one)"
    metrics = WorkerMetrics()
    await sweeper(worker_settings, jobs, blobs, JOB_TTL_S + 60, metrics).sweep_once()

    assert not any([await blobs.exists(key) for key in job_blob_keys(blobs, image_id)])
    assert await rows_of(jobs, image_id) == (0, 0, 1), (
        "row, callback attempt and processed id deleted, a tombstone left"
    )
    assert not (worker_settings.blob_store_location().folder / "thumbnails" / image_id).exists(), "no empty folder"
    gone = await api.get(path, headers=alice)
    assert gone.status_code == 410, gone.text
    assert "expired" in gone.json()["detail"]
    for route in ("/result", "/thumbnails/source", "/original"):
        assert (await api.get(path + route, headers=alice)).status_code == 410, route
    assert (await api.delete(path, headers=alice)).status_code == 410
    assert (await api.get(path, headers=bob)).status_code == 404, "another key does not learn the job existed"
    assert (await api.get(path + "/result", headers=bob)).status_code == 404
    admin = await new_key(jobs, Role.ADMIN)
    assert (await api.get(path, headers=admin)).status_code == 410
    assert (await api.get("/images", headers=alice)).json()["items"] == []
    kinds = {kind: removed(metrics, kind) for kind in ("result", "thumbnail", "upload", "original", "job")}
    assert kinds == {"result": 1.0, "thumbnail": 2.0, "upload": 0.0, "original": 1.0, "job": 1.0}
    assert sweeps(metrics) == 1.0

    # Tombstones do not stay forever: after TOMBSTONE_TTL the id is unknown again.
    await sweeper(worker_settings, jobs, blobs, JOB_TTL_S + TOMBSTONE_TTL_S + 120).sweep_once()
    assert await rows_of(jobs, image_id) == (0, 0, 0)
    assert (await api.get(path, headers=alice)).status_code == 404


async def test_files_expire_before_the_row_which_says_so(
    api: httpx.AsyncClient, worker_settings: Settings, jobs: JobStore, blobs: BlobStore, images: ImageServer
) -> None:
    alice = await new_key(jobs, Role.SUBMIT, Role.READ)
    image_id = await done_job(api, worker_settings, alice, images.url("/img/2.png"))
    path = f"/images/{image_id}"
    metrics = WorkerMetrics()

    await sweeper(worker_settings, jobs, blobs, RESULT_TTL_S + 60, metrics).sweep_once()

    assert not any([await blobs.exists(key) for key in job_blob_keys(blobs, image_id)])
    assert await rows_of(jobs, image_id) == (1, 1, 0), "the row is kept until JOB_TTL"
    view = await api.get(path, headers=alice)
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["status"] == "done"
    assert body["files_expired_at"] is not None
    assert (body["result_url"], body["original_url"], body["thumbnail_urls"]) == (
        None,
        None,
        {"source": None, "result": None},
    )
    for route in ("/result", "/thumbnails/result", "/original"):
        answer = await api.get(path + route, headers=alice)
        assert answer.status_code == 410, (route, answer.text)
        assert "RESULT_TTL" in answer.json()["detail"]
    assert removed(metrics, "job") == 0.0
    assert removed(metrics, "result") == 1.0
    again = WorkerMetrics()
    await sweeper(worker_settings, jobs, blobs, RESULT_TTL_S + 120, again).sweep_once()
    assert removed(again, "result") == removed(again, "thumbnail") == 0.0, "files are swept once"


async def test_a_replayed_event_of_an_expired_job_is_skipped_and_does_not_bring_it_back(
    worker_settings: Settings, jobs: JobStore, blobs: BlobStore, images: ImageServer
) -> None:
    event = url_event(images.url("/img/3.png"))
    image_id = str(event.image_id)
    await produce(worker_settings, [as_record(event)])
    async with running_worker(worker_settings):
        await eventually(lambda: offsets_all_committed(worker_settings), what="the job done and committed")
    assert (await rows_of(jobs, image_id))[0] == 1
    await sweeper(worker_settings, jobs, blobs, JOB_TTL_S + 60).sweep_once()
    assert await rows_of(jobs, image_id) == (0, 0, 1)

    # The same record again, as a replay (image-replay reset) or a redrive would append it.
    [record] = await read_topic(worker_settings, worker_settings.images_topic)
    await produce(worker_settings, [(record.key, record.value)])
    async with running_worker(worker_settings) as worker:
        await eventually(lambda: offsets_all_committed(worker_settings), what="the replay's offset committed")

    assert worker.metrics.registry.get_sample_value("image_worker_records_total", {"outcome": "skipped_expired"}) == 1
    assert images.hits["/img/3.png"] == 1, "the image was not fetched again"
    assert await rows_of(jobs, image_id) == (0, 0, 1), "no row came back"
    assert not await blobs.exists(blobs.result_key(image_id)), "no result was stored again"


async def test_a_job_whose_files_expired_is_not_started_again(worker_settings: Settings, jobs: JobStore) -> None:
    """A failed job's event redriven after RESULT_TTL: its upload is gone, the worker must not run it."""
    event = url_event("https://example.com/a.png")
    now = utc_now()
    failed = dataclasses.replace(Job.from_event(event, JobStatus.FAILED, now=now), finished_at=now, error="boom")
    await jobs.mark_failed(failed)
    await sweeper(worker_settings, jobs, open_blob_store(worker_settings), RESULT_TTL_S + 60).sweep_once()

    started = dataclasses.replace(Job.from_event(event, JobStatus.PROCESSING, now=utc_now()), started_at=utc_now())
    assert isinstance(await jobs.mark_processing(started, event_id=str(uuid.uuid4())), Expired)
    stored = await jobs.get(str(event.image_id))
    assert stored is not None
    assert (stored.status, stored.executions) == (JobStatus.FAILED, 0), "left as it was"


async def test_a_backlog_larger_than_a_batch_is_worked_off_without_waiting_an_interval(
    worker_settings: Settings, jobs: JobStore, blobs: BlobStore
) -> None:
    settings = worker_settings.model_copy(update={"retention_batch_size": 2, "retention_sweep_interval_s": 3600.0})
    now = utc_now()
    image_ids = []
    for _ in range(5):
        event = url_event("https://example.com/a.png")
        await jobs.mark_failed(dataclasses.replace(Job.from_event(event, JobStatus.FAILED, now=now), finished_at=now))
        image_ids.append(str(event.image_id))
    metrics = WorkerMetrics()
    retention = sweeper(settings, jobs, blobs, JOB_TTL_S + 60, metrics)
    task = asyncio.create_task(retention.run())
    try:

        async def all_gone() -> bool:
            return [await rows_of(jobs, image_id) for image_id in image_ids] == [(0, 0, 1)] * len(image_ids)

        await eventually(all_gone, timeout_s=30, what="five expired jobs removed in batches of two")
    finally:
        retention.stop()
        await task
    assert removed(metrics, "job") == 5
    assert sweeps(metrics) >= 3, "three passes at least, one after another"


def sweeping_worker(settings: Settings, at_s: float) -> contextlib.AbstractAsyncContextManager[Worker]:
    """A worker with its retention sweeper (clock ``at_s`` ahead) consuming in this process until the block ends."""
    return running_worker(settings, sweeper=lambda jobs, blobs, metrics: sweeper(settings, jobs, blobs, at_s, metrics))


async def test_two_workers_sweep_each_expired_job_once_and_only_the_lease_holder_sweeps(
    worker_settings: Settings, jobs: JobStore, blobs: BlobStore, images: ImageServer
) -> None:
    events = [url_event(images.url(f"/img/{n}.png")) for n in range(4)]
    await produce(worker_settings, [as_record(event) for event in events])
    async with running_worker(worker_settings):
        await eventually(lambda: offsets_all_committed(worker_settings), what="the jobs done")

    async def all_expired() -> bool:
        return all([(await rows_of(jobs, str(event.image_id)))[2] == 1 for event in events])

    async with (
        sweeping_worker(worker_settings, JOB_TTL_S + 60) as first,
        sweeping_worker(worker_settings, JOB_TTL_S + 60) as second,
    ):
        await eventually(all_expired, timeout_s=30, what="every job expired")
        # Both have had several intervals to try by now: only the holder of the lease swept.
        await eventually(lambda: _swept_twice(first, second), timeout_s=10, what="a few intervals")
        holders = [worker for worker in (first, second) if sweeps(worker.metrics) > 0]
        assert len(holders) == 1, [sweeps(worker.metrics) for worker in (first, second)]

    for kind, count in {"job": 4.0, "result": 4.0, "thumbnail": 8.0, "original": 4.0}.items():
        assert removed(first.metrics, kind) + removed(second.metrics, kind) == count, kind


async def _swept_twice(*workers: Worker) -> bool:
    return sum(sweeps(worker.metrics) for worker in workers) >= 2


async def test_the_lease_lets_one_sweeper_at_a_time_and_passes_on_when_released(
    worker_settings: Settings, jobs: JobStore, blobs: BlobStore
) -> None:
    first, second = (sweeper(worker_settings, jobs, blobs, 0) for _ in range(2))

    answers = await asyncio.gather(first.sweep_once(), second.sweep_once())

    assert sum(answer is not None for answer in answers) == 1, "the database chose one"
    leader, other = (first, second) if answers[0] is not None else (second, first)
    assert await leader.sweep_once() is not None, "the holder renews"
    assert await other.sweep_once() is None
    await leader.lease.release()
    assert await other.sweep_once() is not None, "released: the other takes it at once"
    assert await leader.sweep_once() is None


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        ({"RESULT_TTL": "7200", "JOB_TTL": "3600"}, "JOB_TTL (3600) must be at least RESULT_TTL (7200)"),
        ({"RESULT_TTL": "never", "JOB_TTL": "3600"}, "JOB_TTL (3600) must be at least RESULT_TTL (never)"),
        ({"RESULT_TTL": "0"}, "RESULT_TTL: Value error, expected whole seconds (at least 1)"),
        ({"JOB_TTL": "30d"}, "JOB_TTL: Value error, expected whole seconds (at least 1)"),
        ({"TOMBSTONE_TTL": "-1"}, "TOMBSTONE_TTL: Value error, expected whole seconds (at least 1)"),
    ],
)
def test_retention_settings_are_checked(
    environment: dict[str, str], problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings) as raised:
        load_settings()
    assert problem in str(raised.value)


def test_retention_defaults_are_bounded_and_never_keeps_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.result_ttl, defaults.job_ttl) == (7 * 24 * 3600, 30 * 24 * 3600)
    monkeypatch.setenv("RESULT_TTL", "never")
    monkeypatch.setenv("JOB_TTL", "Never")
    forever = load_settings()
    assert (forever.result_ttl, forever.job_ttl) == ("never", "never")


async def test_openapi_documents_410_where_an_expired_job_answers_it(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    operations = [
        paths["/images/{image_id}"]["get"],
        paths["/images/{image_id}"]["delete"],
        paths["/images/{image_id}/result"]["get"],
        paths["/images/{image_id}/thumbnails/{kind}"]["get"],
        paths["/images/{image_id}/original"]["get"],
    ]
    assert all("410" in operation["responses"] for operation in operations)


@contextlib.asynccontextmanager
async def console_of(settings: Settings, secret: str) -> AsyncIterator[httpx.AsyncClient]:
    """The console, logged in with ``secret`` (its cookies kept by the client)."""
    async with api_client(settings) as console:
        form = await console.get("/console/login")
        found = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert found is not None
        answer = await console.post("/console/login", data={"key": secret, "csrf": found.group(1)})
        assert answer.status_code == 303, answer.text
        yield console


async def test_the_console_shows_expired_files_and_an_expired_job_as_a_page(
    worker_settings: Settings, jobs: JobStore, blobs: BlobStore
) -> None:
    keys = ApiKeyStore(jobs.engine)
    alice, alice_secret = await keys.create(f"alice-{uuid.uuid4().hex[:8]}", frozenset({Role.READ}))
    _, bob_secret = await keys.create(f"bob-{uuid.uuid4().hex[:8]}", frozenset({Role.READ}))
    event = url_event("https://example.com/a.png")
    now = utc_now()
    done = dataclasses.replace(
        Job.from_event(event, JobStatus.DONE, now=now), finished_at=now, owner=alice.key_id, result_key="r"
    )
    await jobs.record_accepted(done)
    page = f"/console/jobs/{event.image_id}"

    await sweeper(worker_settings, jobs, blobs, RESULT_TTL_S + 60).sweep_once()
    async with console_of(worker_settings, alice_secret) as console:
        kept = await console.get(page)
        assert kept.status_code == 200, kept.text
        assert "Its images expired on" in kept.text
        assert f'src="{page}/original"' not in kept.text, "no broken images"
        assert (await console.get(f"{page}/result")).status_code == 410

        await sweeper(worker_settings, jobs, blobs, JOB_TTL_S + 60).sweep_once()
        gone = await console.get(page)
        assert gone.status_code == 410
        assert "<title>Expired" in gone.text
        assert "its images and record are deleted" in gone.text
    async with console_of(worker_settings, bob_secret) as console:
        assert (await console.get(page)).status_code == 404
