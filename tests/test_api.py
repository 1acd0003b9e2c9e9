"""The upload API against a real broker: 202 after the ack, one event per job, clear 4xx for bad input."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from core.addresses import literal_ip, literal_ip_blocked
from core.blobs import open_blob_store
from core.jobs import Job, JobStatus, JobStore
from core.settings import Settings
from core.tables import jobs_table
from core.topics import TopicMissing
from producer.app import create_app
from producer.intake import JobIntake
from schemas import BlobSource, UrlSource, decode_event
from tests.support.api import api_client
from tests.support.images import png_bytes
from tests.support.kafka_reads import partition_count, read_topic
from tests.support.settings import make_settings

pytestmark = pytest.mark.integration


async def test_post_url_appends_one_keyed_event_and_answers_202(api: httpx.AsyncClient, settings: Settings) -> None:
    response = await api.post("/images", json={"url": "https://example.com/cat.jpg", "filter": "grayscale"})

    assert response.status_code == 202
    body = response.json()
    image_id = body["id"]
    assert body == {
        "id": image_id,
        "status": "queued",
        "status_url": f"/images/{image_id}",
        "result_url": f"/images/{image_id}/result",
    }
    assert response.headers["location"] == f"/images/{image_id}"

    records = await read_topic(settings, settings.images_topic)
    assert len(records) == 1
    record = records[0]
    assert record.key == image_id.encode()
    event = decode_event(record.value)
    assert str(event.image_id) == image_id
    assert event.filter == "grayscale"
    assert isinstance(event.source, UrlSource)
    assert str(event.source.url) == "https://example.com/cat.jpg"
    assert dict(record.headers)["event-type"] == b"image_process"


async def test_the_api_creates_its_topic_with_configured_partitions(api: httpx.AsyncClient, settings: Settings) -> None:
    assert await partition_count(settings, settings.images_topic) == 3
    with pytest.raises(TopicMissing):  # dead letters are the workers' business, and the API may not create them
        await partition_count(settings, settings.dlq_topic)


async def test_events_of_one_image_share_a_partition(api: httpx.AsyncClient, settings: Settings) -> None:
    ids = set()
    for index in range(12):
        response = await api.post("/images", json={"url": f"https://example.com/{index}.png", "filter": "blur"})
        ids.add(response.json()["id"])
    records = await read_topic(settings, settings.images_topic)
    assert {record.key.decode() for record in records} == ids
    assert len({record.partition for record in records}) > 1, "keys should spread over partitions"


async def test_upload_stores_bytes_in_blob_store_not_in_the_event(api: httpx.AsyncClient, settings: Settings) -> None:
    image = png_bytes((64, 64), noise=True)
    response = await api.post("/images", files={"file": ("cat.png", image, "image/png")}, data={"filter": "sepia"})

    assert response.status_code == 202
    image_id = response.json()["id"]
    [record] = await read_topic(settings, settings.images_topic)
    event = decode_event(record.value)
    assert isinstance(event.source, BlobSource)
    assert event.source.sha256 == hashlib.sha256(image).hexdigest()
    assert event.source.size_bytes == len(image)
    assert await open_blob_store(settings).get(event.source.key) == image
    assert len(record.value) < 1024, "the event carries a reference, not the image"
    status = (await api.get(f"/images/{image_id}")).json()
    assert status["source"] == {"kind": "upload", "url": None}


async def test_idempotency_key_retry_returns_same_job_without_second_event(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    request = {"url": "https://example.com/dog.png", "filter": "invert"}
    headers = {"Idempotency-Key": "order-17-attempt"}

    first = await api.post("/images", json=request, headers=headers)
    retry = await api.post("/images", json=request, headers=headers)
    other = await api.post("/images", json=request, headers={"Idempotency-Key": "order-18"})

    assert first.status_code == retry.status_code == other.status_code == 202
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert other.json()["id"] != first.json()["id"]
    records = await read_topic(settings, settings.images_topic)
    assert sorted(record.key.decode() for record in records) == sorted([first.json()["id"], other.json()["id"]])


async def test_idempotency_key_reused_for_another_request_is_rejected(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    assert (
        await api.post("/images", json={"url": "https://a.example/1.png", "filter": "blur"}, headers=headers)
    ).status_code == 202

    response = await api.post("/images", json={"url": "https://a.example/2.png", "filter": "blur"}, headers=headers)

    assert response.status_code == 409
    assert "Idempotency-Key" in response.json()["detail"]
    assert len(await read_topic(settings, settings.images_topic)) == 1


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"json": {"url": "https://example.com/a.png", "filter": "posterize"}}, "filter"),
        ({"json": {"url": "ftp://example.com/a.png", "filter": "blur"}}, "url"),
        ({"json": {"url": "file:///etc/passwd", "filter": "blur"}}, "url"),
        ({"json": {"url": "not a url", "filter": "blur"}}, "url"),
        ({"json": {"url": "https://example.com/" + "a" * 3000, "filter": "blur"}}, "url"),
        ({"json": {"filter": "blur"}}, "url"),
        ({"json": {"url": "https://example.com/a.png"}}, "filter"),
        ({"json": {"url": "https://example.com/a.png", "filter": "blur", "size": 3}}, "size"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, None),
        ({"content": b"\x00\xff\xfe", "headers": {"content-type": "application/json"}}, None),
        ({"json": ["https://example.com/a.png", "blur"]}, None),
        (
            {"files": {"file": ("a.png", png_bytes((320, 320), noise=True), "image/png")}, "data": {"filter": "blur"}},
            "file",
        ),
        ({"files": {"file": ("a.png", b"GIF89a but not really", "image/png")}, "data": {"filter": "blur"}}, "file"),
        ({"files": {"file": ("a.png", b"", "image/png")}, "data": {"filter": "blur"}}, "file"),
        ({"files": {"file": ("a.png", png_bytes(), "image/png")}, "data": {"filter": "posterize"}}, "filter"),
        ({"files": {"file": ("a.png", png_bytes(), "image/png")}}, "filter"),
        ({"files": {"other": ("a.png", png_bytes(), "image/png")}, "data": {"filter": "blur"}}, "file"),
    ],
    ids=[
        "unknown-filter",
        "ftp-url",
        "file-url",
        "not-a-url",
        "url-too-long",
        "missing-url",
        "missing-filter",
        "unknown-field",
        "garbage-json",
        "binary-body",
        "json-array",
        "oversize-file",
        "not-an-image",
        "empty-file",
        "upload-unknown-filter",
        "upload-missing-filter",
        "upload-missing-file",
    ],
)
async def test_bad_input_gets_422_naming_the_field(
    api: httpx.AsyncClient, settings: Settings, request_kwargs: dict[str, object], field: str | None
) -> None:
    response = await api.post("/images", **request_kwargs)  # type: ignore[arg-type]

    assert response.status_code == 422, response.text
    [error, *_] = response.json()["detail"]
    assert error["loc"][0] == "body"
    if field is not None:
        assert field in error["loc"], error
    assert error["msg"]
    assert await read_topic(settings, settings.images_topic) == []


async def test_other_media_types_get_415(api: httpx.AsyncClient) -> None:
    response = await api.post("/images", content=b"url=x", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


@pytest.mark.parametrize(
    ("key", "error_type"), [("x" * 300, "string_too_long"), ("tab\there", "string_pattern_mismatch")]
)
async def test_bad_idempotency_key_gets_422(api: httpx.AsyncClient, key: str, error_type: str) -> None:
    response = await api.post(
        "/images", json={"url": "https://example.com/a.png", "filter": "blur"}, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["header", "idempotency-key"], error_type)


NON_PUBLIC_LITERAL_URLS = [
    "http://127.0.0.1/a.png",
    "http://127.0.0.1:8080/a.png",
    "http://[::1]/a.png",
    "http://0.0.0.0/a.png",
    "http://10.1.2.3/a.png",
    "http://172.16.0.9/a.png",
    "http://192.168.0.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/a.png",
    "http://[fc00::1]/a.png",
    "http://[fd00:ec2::254]/a.png",
    "http://[fe80::1]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://[::ffff:169.254.169.254]/a.png",
    "http://2130706433/a.png",
    "http://0x7f000001/a.png",
    "http://0177.0.0.1/a.png",
    "http://127.1/a.png",
    "https://169.254.169.254./a.png",
]


@pytest.mark.parametrize("url", NON_PUBLIC_LITERAL_URLS)
async def test_literal_non_public_ip_url_gets_422_naming_url(
    api: httpx.AsyncClient, settings: Settings, url: str
) -> None:
    """The API can judge a literal IP address without DNS, so it refuses it instead of queueing a doomed job."""
    assert settings.allow_private_urls is False
    response = await api.post("/images", json={"url": url, "filter": "blur"})

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "url"]
    assert "non-public IP address" in error["msg"]
    assert "input" not in error, "the input is never echoed back"
    assert await read_topic(settings, settings.images_topic) == []


@pytest.mark.parametrize(
    "url",
    ["https://example.com/a.png", "http://93.184.216.34/a.png", "http://[2606:4700::1111]/a.png", "http://localhost/"],
    ids=["public-name", "public-ipv4", "public-ipv6", "host-name-left-to-the-worker"],
)
async def test_public_addresses_and_host_names_are_accepted(api: httpx.AsyncClient, url: str) -> None:
    """Host names need DNS, which the API does not do at accept time: the worker resolves and checks them."""
    assert (await api.post("/images", json={"url": url, "filter": "blur"})).status_code == 202


async def test_allow_private_urls_lets_literal_private_ips_through(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, allow_private_urls=True)
    async with api_client(settings) as api:
        for url in ("http://127.0.0.1:8080/a.png", "http://[::1]/a.png", "http://10.0.0.1/a.png"):
            assert (await api.post("/images", json={"url": url, "filter": "blur"})).status_code == 202, url
    assert len(await read_topic(settings, settings.images_topic)) == 3


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:7f00:1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("10.0.0.1.", "10.0.0.1"),
        ("example.com", None),
        ("localhost", None),
        ("cafe.be", None),
        ("1.2.3.4.5", None),
        ("999.1.1.1", None),
    ],
)
def test_literal_ip_reads_every_spelling_without_dns(host: str, address: str | None) -> None:
    expected = None if address is None else ipaddress.ip_address(address)
    assert literal_ip(host) == expected
    assert literal_ip_blocked(host) is (expected is not None)


async def test_unknown_and_malformed_ids(api: httpx.AsyncClient) -> None:
    unknown = uuid.uuid4()
    assert (await api.get(f"/images/{unknown}")).status_code == 404
    assert (await api.get(f"/images/{unknown}/result")).status_code == 404
    assert (await api.get("/images/not-a-uuid")).status_code == 422


async def test_result_of_unfinished_job_is_409(api: httpx.AsyncClient) -> None:
    accepted = await api.post("/images", json={"url": "https://example.com/a.png", "filter": "emboss"})
    response = await api.get(accepted.json()["result_url"])
    assert response.status_code == 409
    assert "queued" in response.json()["detail"]


async def test_health_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"broker": "ok", "database": "ok"}


async def test_openapi_documents_both_request_bodies(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    content = schema["paths"]["/images"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert (await api.get("/docs")).status_code == 200


async def test_status_reads_on_each_database(kafka_bootstrap: str, tmp_path: Path, database_url: str) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, database_url=database_url)
    async with api_client(settings) as api:
        accepted = await api.post("/images", json={"url": "https://example.com/s.png", "filter": "sharpen"})
        status = await api.get(accepted.json()["status_url"])

    assert status.status_code == 200
    view = status.json()
    assert view["id"] == accepted.json()["id"]
    assert view["status"] == "queued"
    assert view["filter"] == "sharpen"
    assert view["source"] == {"kind": "url", "url": "https://example.com/s.png"}
    assert view["attempts"] == 0
    assert view["result_url"] is None
    assert dt.datetime.fromisoformat(view["requested_at"]).tzinfo is not None


async def test_done_job_serves_its_result(api: httpx.AsyncClient, settings: Settings) -> None:
    accepted = await api.post("/images", json={"url": "https://example.com/r.png", "filter": "thumbnail"})
    image_id = accepted.json()["id"]
    result = png_bytes((4, 4), color=(1, 2, 3))
    blobs = open_blob_store(settings)
    await blobs.put(blobs.result_key(image_id), result)
    jobs = JobStore.from_url(settings.database_url)
    async with jobs.engine.begin() as connection:
        await connection.execute(
            update(jobs_table)
            .where(jobs_table.c.image_id == image_id)
            .values(status=JobStatus.DONE.value, result_key=blobs.result_key(image_id))
        )
    await jobs.close()

    view = (await api.get(f"/images/{image_id}")).json()
    response = await api.get(view["result_url"])

    assert view["status"] == "done"
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == result


@contextlib.asynccontextmanager
async def api_on_store(settings: Settings, store: JobStore) -> AsyncIterator[tuple[httpx.AsyncClient, JobIntake]]:
    """The API with its job store swapped for ``store`` (closed at the end), reached through httpx."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        intake = JobIntake(settings, store, services.blobs, services.publisher)
        app.state.services = dataclasses.replace(services, jobs=store, intake=intake)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
                yield api, intake
        finally:
            await intake.aclose()
            await store.close()


async def test_database_outage_is_503_and_an_acked_job_is_still_accepted(settings: Settings) -> None:
    unreachable = JobStore.from_url("postgresql://nobody:secret@127.0.0.1:1/images")  # nothing listens on :1
    async with api_on_store(settings, unreachable) as (api, _):
        status = await api.get(f"/images/{uuid.uuid4()}")
        accepted = await api.post("/images", json={"url": "https://example.com/z.png", "filter": "blur"})
        keyed = await api.post(
            "/images", json={"url": "https://example.com/z.png", "filter": "blur"}, headers={"Idempotency-Key": "k"}
        )
        ready = await api.get("/readyz")

    assert status.status_code == 503
    assert status.headers["retry-after"] == str(settings.retry_after_s)
    assert accepted.status_code == 202, "the event is in the log: the worker will write the job's row"
    assert keyed.status_code == 503, "without the database an Idempotency-Key cannot be checked"
    assert ready.status_code == 503
    assert ready.json()["database"].startswith("unavailable")
    records = await read_topic(settings, settings.images_topic)
    assert [record.key.decode() for record in records] == [accepted.json()["id"]]


class BusyDatabase(JobStore):
    """A job store whose row writes wait until the test lets them through, as a locked database makes them."""

    def __init__(self, database_url: str) -> None:
        super().__init__(JobStore.from_url(database_url).engine)
        self.unlocked = asyncio.Event()

    async def record_accepted(self, *jobs: Job) -> None:
        await self.unlocked.wait()
        await super().record_accepted(*jobs)


async def test_a_busy_database_does_not_hold_the_202_past_the_send_timeout(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, send_timeout_s=1.0)
    busy = BusyDatabase(settings.database_url)
    async with api_on_store(settings, busy) as (api, intake):
        started = time.monotonic()
        accepted = await api.post("/images", json={"url": "https://example.com/slow.png", "filter": "blur"})
        elapsed_s = time.monotonic() - started
        image_id = accepted.json()["id"]
        assert await busy.get(image_id) is None, "the row is still waiting for the database"
        busy.unlocked.set()
        await intake.aclose()  # shutdown waits for rows still being written
        job = await busy.get(image_id)

    assert accepted.status_code == 202
    assert elapsed_s < settings.send_timeout_s + 1.0, "answered at the deadline, not when the database freed up"
    assert job is not None
    assert job.status is JobStatus.QUEUED


class CountingDatabase(JobStore):
    """A job store that counts the transactions writing accepted jobs' rows."""

    def __init__(self, database_url: str) -> None:
        super().__init__(JobStore.from_url(database_url).engine)
        self.transactions = 0

    async def record_accepted(self, *jobs: Job) -> None:
        self.transactions += 1
        await super().record_accepted(*jobs)


async def test_rows_of_concurrent_requests_share_transactions(settings: Settings) -> None:
    requests = 40
    counting = CountingDatabase(settings.database_url)
    async with api_on_store(settings, counting) as (api, _):
        answers = await asyncio.gather(
            *(
                api.post("/images", json={"url": f"https://example.com/{n}.png", "filter": "blur"})
                for n in range(requests)
            )
        )
        jobs = [await counting.get(answer.json()["id"]) for answer in answers]

    assert [answer.status_code for answer in answers] == [202] * requests
    assert all(job is not None and job.status is JobStatus.QUEUED for job in jobs), "each 202 has its row"
    assert counting.transactions < requests, "rows waiting together are written in one transaction"


# Found by the schema fuzz (tests/reliability/test_api_fuzz.py): the upload's schema forbids other form fields
# (additionalProperties: false), as the JSON body does, and README promises 422 for an unknown field.
async def test_upload_with_an_unknown_field_gets_422_naming_it(api: httpx.AsyncClient, settings: Settings) -> None:
    response = await api.post(
        "/images", files={"file": ("a.png", png_bytes(), "image/png")}, data={"filter": "blur", "size": "3"}
    )

    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "size"]]
    assert await read_topic(settings, settings.images_topic) == []


# Found by the schema fuzz: the 202 was documented as `{}`, so nothing checked the body, the Location header or
# the Retry-After of a 503 against the schema; the routes also answer 503 when the job store is unavailable.
async def test_openapi_documents_the_accepted_job_its_links_and_every_503(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    accepted = paths["/images"]["post"]["responses"]["202"]
    assert accepted["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobAccepted"}
    assert accepted["headers"]["Location"]["required"] is True
    links = {name: link["operationRef"] for name, link in accepted["links"].items()}
    assert links == {
        "GetStatus": "#/paths/~1images~1{image_id}/get",
        "GetResult": "#/paths/~1images~1{image_id}~1result/get",
    }
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path.startswith("/images"):
                assert operation["responses"]["503"]["headers"]["Retry-After"]["required"] is True, (method, path)


async def test_a_url_that_grows_once_percent_encoded_is_accepted_and_carried_encoded(api: httpx.AsyncClient) -> None:
    url = "https://example.com/" + "é" * 1000  # 1,020 characters as sent (the limit is 2,048), 6,020 encoded
    accepted = await api.post("/images", json={"url": url, "filter": "blur"})
    assert accepted.status_code == 202, accepted.text
    status = await api.get(accepted.json()["status_url"])
    assert status.json()["source"]["url"] == "https://example.com/" + "%C3%A9" * 1000
    too_long = await api.post("/images", json={"url": "https://example.com/" + "a" * 2048, "filter": "blur"})
    assert too_long.status_code == 422
