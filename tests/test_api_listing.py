"""GET /images: a key's own jobs (an admin's: everyone's), a page at a time, filtered; and the images of a job
served to its owner alone. On each supported database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from core.api_keys import ApiKeyStore, Role
from core.blobs import ThumbnailKind, open_blob_store
from core.jobs import Job, JobStatus, JobStore
from core.schema import upgrade
from core.settings import Settings
from tests.support.api import api_client
from tests.support.images import encoded
from tests.support.settings import make_settings

pytestmark = pytest.mark.integration

STATUSES = (JobStatus.QUEUED, JobStatus.DONE, JobStatus.FAILED)
Headers = dict[str, str]


@dataclasses.dataclass(frozen=True)
class Caller:
    key_id: str
    headers: Headers


@pytest.fixture
def secured(kafka_bootstrap: str, tmp_path: Path, database_url: str) -> Settings:
    return make_settings(kafka_bootstrap, tmp_path, auth_disabled=False, database_url=database_url)


@pytest.fixture
async def jobs(secured: Settings) -> AsyncIterator[JobStore]:
    store = JobStore.from_url(secured.database_url)
    await upgrade(store.engine)
    yield store
    await store.close()


@pytest.fixture
async def api(secured: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(secured) as client:
        yield client


async def new_caller(jobs: JobStore, *roles: Role) -> Caller:
    # Names of their own: the session's PostgreSQL database keeps other tests' keys.
    key, secret = await ApiKeyStore(jobs.engine).create(f"key-{uuid.uuid4().hex[:12]}", frozenset(roles))
    return Caller(key.key_id, {"Authorization": f"Bearer {secret}"})


def make_job(t0: dt.datetime, number: int, owner: str) -> Job:
    """Job ``number``: two share each requested_at; statuses, filters and sources take turns."""
    requested_at = t0 + dt.timedelta(seconds=number // 2)
    image_id = str(uuid.uuid4())
    return Job(
        image_id=image_id,
        status=STATUSES[number % 3],
        filter=("blur", "sepia")[number % 2],
        source_url=None if number % 5 == 0 else f"https://example.com/{number}.png",
        blob_key=f"uploads/{image_id}" if number % 5 == 0 else None,
        request_fingerprint="f" * 64,
        requested_at=requested_at,
        updated_at=requested_at,
        owner=owner,
    )


async def pages_of(api: httpx.AsyncClient, caller: Caller, **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        answer = await api.get(
            "/images", params={**params, **({"cursor": cursor} if cursor else {})}, headers=caller.headers
        )
        assert answer.status_code == 200, answer.text
        pages.append(answer.json()["items"])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return pages


async def test_a_key_pages_through_its_own_jobs_and_an_admin_through_everyones(
    api: httpx.AsyncClient, jobs: JobStore
) -> None:
    alice, bob = await new_caller(jobs, Role.READ), await new_caller(jobs, Role.READ)
    admin = await new_caller(jobs, Role.ADMIN)
    t0 = dt.datetime(2031, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=uuid.uuid4().int % 30_000)
    made = [make_job(t0, number, alice.key_id if number % 3 else bob.key_id) for number in range(45)]
    await jobs.record_accepted(*made)
    newest_first = sorted(made, key=lambda job: (job.requested_at, job.image_id), reverse=True)

    alices = await pages_of(api, alice)
    window = {"requested_after": t0.isoformat(), "requested_before": (t0 + dt.timedelta(hours=1)).isoformat()}
    everyones = await pages_of(api, admin, **window)

    assert [len(page) for page in alices] == [20, 10]
    assert [item["id"] for page in alices for item in page] == [
        job.image_id for job in newest_first if job.owner == alice.key_id
    ], "no duplicates, no gaps, newest first"
    assert [item["id"] for page in everyones for item in page] == [job.image_id for job in newest_first]
    bobs = await pages_of(api, bob, limit=100)
    assert sorted(item["id"] for item in bobs[0]) == sorted(job.image_id for job in made if job.owner == bob.key_id)

    done_blur = await pages_of(api, alice, status="done", filter="blur", limit=3)
    expected = [
        job.image_id
        for job in newest_first
        if job.owner == alice.key_id and job.status is JobStatus.DONE and job.filter == "blur"
    ]
    assert [item["id"] for page in done_blur for item in page] == expected
    prefix = newest_first[1].image_id[:2].upper()
    assert [item["id"] for item in (await pages_of(api, admin, q=prefix, **window))[0]] == [
        job.image_id for job in newest_first if job.image_id.startswith(prefix.lower())
    ]

    upload = next(item for item in everyones[0] if item["source"]["kind"] == "upload" and item["status"] == "queued")
    assert upload["original_url"] == f"/images/{upload['id']}/original", "an upload is stored before the job"
    assert (upload["kafka"], upload["thumbnail_urls"]) == (None, {"source": None, "result": None})


BAD_PARAMETERS = [
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "1." + "0" * 31}, "cursor"),
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"status": "lost"}, "status"),
    ({"filter": "glow"}, "filter"),
    ({"q": "xyz"}, "q"),
    ({"requested_after": "2026-11-02T10:00:00"}, "requested_after"),  # no zone: whose 10:00?
    ({"requested_before": "yesterday"}, "requested_before"),
    ({"requested_before": "1764547200"}, "requested_before"),  # seconds since 1970 are not RFC 3339
]


async def test_a_bad_parameter_is_a_422_naming_it(api: httpx.AsyncClient, jobs: JobStore) -> None:
    caller = await new_caller(jobs, Role.READ)
    for params, location in BAD_PARAMETERS:
        answer = await api.get("/images", params=params, headers=caller.headers)
        assert answer.status_code == 422, (params, answer.text)
        assert [error["loc"] for error in answer.json()["detail"]] == [["query", location]], params
    refused = await api.request("OPTIONS", "/images", headers=caller.headers)
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, POST"), "both of the path's methods"


async def test_a_jobs_images_are_served_to_its_owner_alone(
    api: httpx.AsyncClient, jobs: JobStore, secured: Settings
) -> None:
    alice, bob = await new_caller(jobs, Role.READ), await new_caller(jobs, Role.READ)
    job = make_job(dt.datetime.now(dt.UTC), 1, alice.key_id)  # a URL job
    await jobs.record_accepted(dataclasses.replace(job, status=JobStatus.DONE))
    blobs = open_blob_store(secured)
    original = encoded(Image.new("RGB", (12, 8), (1, 2, 3)), "GIF")
    await blobs.put(blobs.original_key(job.image_id), original)
    await blobs.put(blobs.thumbnail_key(job.image_id, ThumbnailKind.SOURCE), b"webp")
    base = f"/images/{job.image_id}"

    served = await api.get(f"{base}/original", headers=alice.headers)
    assert (served.status_code, served.headers["content-type"], served.content) == (200, "image/gif", original)
    assert (await api.get(f"{base}/thumbnails/source", headers=alice.headers)).status_code == 200
    missing = await api.get(f"{base}/thumbnails/result", headers=alice.headers)
    assert missing.status_code == 404, "not stored"
    assert missing.json()["detail"] == f"the result thumbnail of job {job.image_id} is not stored"
    for path in ("original", "thumbnails/source"):
        assert (await api.get(f"{base}/{path}", headers=bob.headers)).status_code == 404, "not bob's"
        assert (await api.get(f"{base}/{path}")).status_code == 401
    assert (await api.get(f"/images/{uuid.uuid4()}/original", headers=alice.headers)).status_code == 404
