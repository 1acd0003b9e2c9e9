"""Cancelling a queued job (``DELETE /images/{id}``) against a real broker and a real worker, on each database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core.api_keys import ApiKeyStore, Role
from core.jobs import Job, JobStatus, JobStore, utc_now
from core.settings import Settings
from tests.support.api import api_client
from tests.support.events import url_event
from tests.support.image_server import ImageServer
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually, offsets_all_committed, running_worker

pytestmark = pytest.mark.integration

Headers = dict[str, str]


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path, database_url: str) -> Settings:
    return worker_test_settings(kafka_bootstrap, tmp_path, database_url=database_url, auth_disabled=False)


async def new_key(jobs: JobStore, *roles: Role) -> Headers:
    # Key names are unique per database, and the PostgreSQL one is shared by the session's tests.
    _, secret = await ApiKeyStore(jobs.engine).create(f"key-{uuid.uuid4().hex[:12]}", frozenset(roles))
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def api(worker_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(worker_settings) as client:
        yield client


async def submitted(api: httpx.AsyncClient, headers: Headers, url: str) -> str:
    """A job's status path, once its row is recorded (the API may write it just after the 202)."""
    accepted = await api.post("/images", json={"url": url, "filter": "grayscale"}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    path: str = accepted.json()["status_url"]

    async def recorded() -> bool:
        return (await api.get(path, headers=headers)).status_code == 200

    await eventually(recorded, timeout_s=10, what="the job's row")
    return path


async def status_of(api: httpx.AsyncClient, headers: Headers, path: str) -> str:
    status: str = (await api.get(path, headers=headers)).json()["status"]
    return status


async def test_a_job_cancelled_while_queued_is_never_run_and_its_offset_is_committed(
    api: httpx.AsyncClient, worker_settings: Settings, jobs: JobStore, images: ImageServer
) -> None:
    alice = await new_key(jobs, Role.SUBMIT, Role.READ)
    bob = await new_key(jobs, Role.SUBMIT, Role.READ)
    path = await submitted(api, alice, images.url("/img/1.png"))

    assert (await api.delete(path, headers=bob)).status_code == 404, "another key's job is not there"
    assert await status_of(api, alice, path) == "queued", "and it was left alone"
    first = await api.delete(path, headers=alice)
    again = await api.delete(path, headers=alice)

    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json() == again.json(), "a second cancel answers the same"
    assert first.json()["status"] == "cancelled"
    async with running_worker(worker_settings) as worker:
        await eventually(lambda: offsets_all_committed(worker_settings), what="the cancelled record's offset committed")
    assert images.hits["/img/1.png"] == 0, "the worker never downloaded the image"
    assert await status_of(api, alice, path) == "cancelled"
    skipped = {"outcome": "skipped_cancelled"}
    assert worker.metrics.registry.get_sample_value("image_worker_records_total", skipped) == 1.0


async def test_a_started_job_is_not_cancelled_and_finishes(
    api: httpx.AsyncClient, worker_settings: Settings, jobs: JobStore, images: ImageServer
) -> None:
    alice = await new_key(jobs, Role.SUBMIT, Role.READ)
    admin = await new_key(jobs, Role.ADMIN)
    reader = await new_key(jobs, Role.READ)
    # The image is served slowly, so the job is still processing when it is cancelled.
    path = await submitted(api, alice, images.url("/img/2.png?delay=2"))

    async with running_worker(worker_settings):
        await images.wait_for_hits("/img/2.png", 1)  # the worker marks the job processing before it downloads
        running = await api.delete(path, headers=alice)
        assert running.status_code == 409, running.text
        assert " is processing;" in running.json()["detail"]

        async def done() -> bool:
            return await status_of(api, alice, path) == "done"

        await eventually(done, what="the job finished")

    for headers in (alice, admin):
        finished = await api.delete(path, headers=headers)
        assert finished.status_code == 409, finished.text
        assert " is done;" in finished.json()["detail"]
    assert (await api.delete(path, headers=reader)).status_code == 403, "cancelling needs the submit role"
    assert (await api.delete(path)).status_code == 401
    assert images.hits["/img/2.png"] == 1


async def test_a_job_without_a_row_is_404_and_one_a_worker_wrote_first_is_409(
    api: httpx.AsyncClient, jobs: JobStore
) -> None:
    admin = await new_key(jobs, Role.ADMIN)
    event = url_event("https://example.com/a.png")
    path = f"/images/{event.image_id}"
    assert (await api.delete(path, headers=admin)).status_code == 404, "no row yet: nothing to cancel"

    started = Job.from_event(event, JobStatus.PROCESSING, now=utc_now())
    assert await jobs.mark_processing(started, event_id=str(event.event_id))
    refused = await api.delete(path, headers=admin)

    assert refused.status_code == 409, refused.text
    assert await status_of(api, admin, path) == "processing"


async def test_openapi_documents_every_answer_of_a_cancel(api: httpx.AsyncClient) -> None:
    operation = (await api.get("/openapi.json")).json()["paths"]["/images/{image_id}"]["delete"]

    assert set(operation["responses"]) == {"200", "401", "403", "404", "409", "410", "422", "429", "503"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobView"
    }
    assert operation["security"] == [{"HTTPBearer": []}]
    assert "not interrupted" in operation["description"]
