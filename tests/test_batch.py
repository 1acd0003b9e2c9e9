"""``POST /images:batch`` against a real broker: answered item by item, all valid items in one transaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from core.api_keys import ApiKeyStore, Role
from core.jobs import JobStatus, JobStore
from core.settings import Settings
from producer.models import MAX_BATCH_JOBS
from schemas import decode_event
from scripts.kafka.local import KafkaNode
from tests.support.api import api_client
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic
from tests.support.settings import make_settings, worker_test_settings
from tests.support.worker import count_jobs, eventually, running_worker

pytestmark = pytest.mark.integration

JOB = {"url": "https://example.com/a.png", "filter": "blur"}
# Each invalid item and the error type its answer names.
INVALID = {
    7: ({"url": "https://example.com/x.png", "filter": "posterize-ish"}, "enum"),
    19: ({"url": "ftp://example.com/x.png", "filter": "blur"}, "url_scheme"),
    23: ({"url": "https://example.com/x.png", "filter": "blur", "priority": 1}, "extra_forbidden"),
    31: ("not an object", "model_type"),
    42: ({"filter": "blur"}, "missing"),
    45: ({"url": "https://example.com/" + "a" * 2048, "filter": "blur"}, "url_too_long"),
}


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return worker_test_settings(kafka_bootstrap, tmp_path)


async def test_a_batch_is_answered_per_item_and_its_valid_jobs_are_done(
    worker_settings: Settings, images: ImageServer, jobs: JobStore
) -> None:
    items: list[object] = [
        INVALID[index][0] if index in INVALID else {"url": images.url(f"/img/{index}.png"), "filter": "grayscale"}
        for index in range(50)
    ]
    async with api_client(worker_settings) as api:
        response = await api.post("/images:batch", json={"jobs": items})
    assert response.status_code == 200, response.text
    answers = response.json()["jobs"]
    assert [answer["index"] for answer in answers] == list(range(50))
    for index, (_, error_type) in INVALID.items():
        error = answers[index]["error"]
        assert error["type"] == error_type, error
        assert error["loc"][:3] == ["body", "jobs", index]
        assert error["msg"]
        assert "id" not in answers[index]
    accepted = [answer for answer in answers if "id" in answer]
    assert len(accepted) == 50 - len(INVALID)
    for answer in accepted:
        assert answer["status"] == "queued"
        assert answer["status_url"] == f"/images/{answer['id']}"

    records = await read_topic(worker_settings, worker_settings.images_topic)
    assert sorted(str(decode_event(record.value).image_id) for record in records) == sorted(a["id"] for a in accepted)

    async def all_done() -> bool:
        statuses = [await jobs.get(answer["id"]) for answer in accepted]
        return all(job is not None and job.status is JobStatus.DONE for job in statuses)

    async with running_worker(worker_settings):
        await eventually(all_done, what="every accepted job of the batch done")
    recorded = [await count_jobs(jobs, status) for status in JobStatus]
    assert sum(recorded) == len(accepted), "an invalid item must not have become a job"


async def test_a_private_address_is_refused_in_its_place(api: httpx.AsyncClient, settings: Settings) -> None:
    response = await api.post("/images:batch", json={"jobs": [JOB, {"url": "http://10.0.0.1/a.png", "filter": "blur"}]})
    assert response.status_code == 200, response.text
    first, second = response.json()["jobs"]
    assert first["status"] == "queued"
    assert second["error"]["loc"] == ["body", "jobs", 1, "url"]
    assert "non-public" in second["error"]["msg"]
    assert len(await read_topic(settings, settings.images_topic)) == 1


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"jobs": []}, ["body", "jobs"]),
        ({"jobs": [JOB] * (MAX_BATCH_JOBS + 1)}, ["body", "jobs"]),
        ({"jobs": [JOB], "more": 1}, ["body", "more"]),
        ([JOB], ["body"]),
    ],
    ids=["empty", "over-the-maximum", "extra-field", "not-an-object"],
)
async def test_a_malformed_batch_is_422_and_accepts_nothing(
    api: httpx.AsyncClient, settings: Settings, body: object, location: list[str]
) -> None:
    response = await api.post("/images:batch", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == location
    assert await read_topic(settings, settings.images_topic) == []


async def test_a_too_large_body_an_idempotency_key_and_other_media_are_refused(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    huge = {"jobs": [{"url": "https://example.com/" + "a" * 3000, "filter": "blur"}] * MAX_BATCH_JOBS}
    too_large = await api.post("/images:batch", json=huge)
    assert too_large.status_code == 422, too_large.text
    assert too_large.json()["detail"][0]["type"] == "too_large"

    keyed = await api.post("/images:batch", json={"jobs": [JOB]}, headers={"Idempotency-Key": "k-1"})
    assert keyed.status_code == 422, keyed.text
    assert keyed.json()["detail"][0]["loc"] == ["header", "idempotency-key"]

    text = await api.post("/images:batch", content=b"jobs", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415, text.text
    assert await read_topic(settings, settings.images_topic) == []


async def test_the_batch_path_does_not_reach_the_job_routes(api: httpx.AsyncClient) -> None:
    accepted = await api.post("/images:batch", json={"jobs": [JOB]})
    assert accepted.status_code == 200, accepted.text
    status = await api.get(accepted.json()["jobs"][0]["status_url"])
    assert status.status_code in (200, 404)  # the row may still be being written; the id is a job's, not a 422
    wrong_method = await api.get("/images:batch")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"


async def test_without_a_submit_key_a_batch_is_refused(secured: Settings, keys: ApiKeyStore) -> None:
    _, reader = await keys.create("dashboard", frozenset({Role.READ}))
    async with api_client(secured) as api:
        anonymous = await api.post("/images:batch", json={"jobs": [JOB]})
        assert anonymous.status_code == 401, anonymous.text
        read_only = await api.post("/images:batch", json={"jobs": [JOB]}, headers={"Authorization": f"Bearer {reader}"})
        assert read_only.status_code == 403, read_only.text
    assert await read_topic(secured, secured.images_topic) == []


async def test_during_a_broker_outage_a_batch_is_503_and_nothing_is_accepted(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path / "kafka")
    try:
        await asyncio.to_thread(node.start)
        settings = make_settings(node.bootstrap_servers, tmp_path, send_timeout_s=2.0, retry_after_s=4)
        async with api_client(settings) as api:
            assert (await api.post("/images:batch", json={"jobs": [JOB]})).status_code == 200
            await asyncio.to_thread(node.stop)
            refused = await api.post("/images:batch", json={"jobs": [JOB] * 10})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "4"
            assert "no job of the batch was accepted" in refused.json()["detail"]
            await asyncio.to_thread(node.start)
        records = await read_topic(settings, settings.images_topic, committed_only=True)
        assert len(records) == 1, "only the batch before the outage is committed"
    finally:
        node.stop()
