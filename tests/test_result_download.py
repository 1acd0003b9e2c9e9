"""GET /images/{id}/result: streamed from either blob store with its length and version tag, or a redirect to a
signed URL of the object store."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from core.blobs import open_blob_store
from core.jobs import JobStatus, JobStore
from core.settings import Settings
from core.tables import jobs_table
from tests.support.api import api_client
from tests.support.images import png_bytes
from tests.support.object_store import S3Server
from tests.support.settings import make_settings

pytestmark = pytest.mark.integration


async def finished_job(api: httpx.AsyncClient, settings: Settings, result: bytes) -> str:
    """A job accepted by the API whose result is stored and whose row says done: the result URL."""
    accepted = await api.post("/images", json={"url": "https://example.com/r.png", "filter": "thumbnail"})
    image_id = accepted.json()["id"]
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
    return str(accepted.json()["result_url"])


@pytest.fixture(params=["file", "s3"])
def store_settings(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    if request.param == "file":
        return make_settings(kafka_bootstrap, tmp_path)
    s3: S3Server = request.getfixturevalue("s3")
    return make_settings(kafka_bootstrap, tmp_path, **s3.settings())


async def test_a_result_streams_with_its_length_and_version_tag(store_settings: Settings) -> None:
    result = png_bytes((40, 30), noise=True)
    async with api_client(store_settings) as api:
        url = await finished_job(api, store_settings, result)
        response = await api.get(url)
        assert response.status_code == 200
        assert response.content == result
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-length"] == str(len(result))
        assert response.headers["cache-control"] == "private, no-cache", "a re-run replaces it: revalidate"

        unchanged = await api.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert unchanged.status_code == 304
        assert unchanged.content == b""
        assert (await api.get(url, headers={"If-None-Match": '"other"'})).status_code == 200


async def test_a_result_can_be_a_redirect_to_a_short_lived_signed_url(
    kafka_bootstrap: str, tmp_path: Path, s3: S3Server
) -> None:
    settings = make_settings(
        kafka_bootstrap, tmp_path, result_download="redirect", result_url_expiry_s=30, **s3.settings()
    )
    result = png_bytes((8, 8), color=(9, 8, 7))
    async with api_client(settings) as api:
        url = await finished_job(api, settings, result)
        response = await api.get(url)
    assert response.status_code == 307
    assert response.headers["cache-control"] == "no-store"
    signed = response.headers["location"]
    assert signed.startswith(s3.endpoint_url)
    assert "X-Amz-Expires=30" in signed
    async with httpx.AsyncClient() as client:
        assert (await client.get(signed)).content == result
