"""What the console shows of a job, end to end: a worker on a real broker stores thumbnails, the original and the
record's coordinates, and the API serves them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from core.settings import Settings
from tests.support.api import api_client
from tests.support.image_server import ImageServer
from tests.support.images import encoded, png_bytes
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually, running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return worker_test_settings(kafka_bootstrap, tmp_path)


async def view_when_done(api: httpx.AsyncClient, image_id: str) -> dict[str, Any]:
    async def done() -> bool:
        return bool((await api.get(f"/images/{image_id}")).json()["status"] == "done")

    await eventually(done, what=f"job {image_id} done")
    view: dict[str, Any] = (await api.get(f"/images/{image_id}")).json()
    return view


async def test_a_worker_stores_thumbnails_the_original_and_coordinates_that_the_api_serves(
    worker_settings: Settings, images: ImageServer
) -> None:
    photo = encoded(Image.new("RGB", (400, 300), (10, 120, 200)), "JPEG")
    async with api_client(worker_settings) as api:
        by_url = await api.post("/images", json={"url": images.url("/img/5.png"), "filter": "sepia"})
        uploaded = await api.post("/images", files={"file": ("p.jpg", photo, "image/jpeg")}, data={"filter": "blur"})
        assert (by_url.status_code, uploaded.status_code) == (202, 202), (by_url.text, uploaded.text)
        upload_id = uploaded.json()["id"]
        assert (await api.get(f"/images/{upload_id}")).json()["original_url"] == f"/images/{upload_id}/original"

        async with running_worker(worker_settings):
            views = [await view_when_done(api, answer.json()["id"]) for answer in (by_url, uploaded)]

        for view, original, media_type, source_size in (
            (views[0], png_bytes(seed=5), "image/png", (24, 16)),
            (views[1], photo, "image/jpeg", (256, 192)),
        ):
            kafka = view["kafka"]
            assert (kafka["topic"], kafka["key"]) == (worker_settings.images_topic, view["id"])
            assert 0 <= kafka["partition"] < worker_settings.topic_partitions
            assert kafka["offset"] >= 0
            response = await api.get(view["original_url"])
            assert (response.status_code, response.headers["content-type"]) == (200, media_type)
            assert response.content == original
            for kind, url in view["thumbnail_urls"].items():
                thumbnail = await api.get(url)
                assert (thumbnail.status_code, thumbnail.headers["content-type"]) == (200, "image/webp"), kind
                assert thumbnail.headers["cache-control"] == "private, no-cache"
                assert Image.open(io.BytesIO(thumbnail.content)).size == source_size, kind
                again = await api.get(url, headers={"If-None-Match": thumbnail.headers["etag"]})
                assert again.status_code == 304

        # A job no worker has run yet: nothing to show but its (null) links.
        waiting = (await api.post("/images", json={"url": images.url("/img/6.png"), "filter": "blur"})).json()
        view = (await api.get(waiting["status_url"])).json()
        assert (view["kafka"], view["original_url"], view["thumbnail_urls"]) == (
            None,
            None,
            {"source": None, "result": None},
        )
        for path in ("thumbnails/source", "thumbnails/result", "original"):
            not_yet = await api.get(f"{waiting['status_url']}/{path}")
            assert not_yet.status_code == 409, path  # as its result: stored once the job is done
        assert (await api.get(f"{waiting['status_url']}/thumbnails/other")).status_code == 422
