"""The API and a worker that share no folder: uploads and results go through the object store alone."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from core.blobs import open_blob_store
from core.jobs import JobStatus, JobStore
from core.settings import Settings
from tests.reliability.harness import free_port, wait_until_ready
from tests.support.image_server import ImageServer
from tests.support.images import png_bytes
from tests.support.object_store import S3Server
from tests.support.processes import ApiProcess, WorkerProcess
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually

pytestmark = pytest.mark.integration


async def test_jobs_run_between_processes_that_share_only_the_object_store(
    kafka_bootstrap: str, tmp_path: Path, s3: S3Server, images: ImageServer
) -> None:
    shared = worker_test_settings(kafka_bootstrap, tmp_path, **s3.settings())
    api_dir, worker_dir = tmp_path / "api-host", tmp_path / "worker-host"
    api_settings, worker_settings = (
        Settings.model_validate({**shared.model_dump(), "storage_dir": folder}) for folder in (api_dir, worker_dir)
    )
    api = ApiProcess(api_settings, tmp_path / "api.log", free_port())
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log")
    jobs = JobStore.from_url(shared.database_url)
    upload = png_bytes((30, 20), noise=True)
    try:
        await wait_until_ready(api.base_url)
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            posted = [
                await client.post("/images", files={"file": ("a.png", upload, "image/png")}, data={"filter": "invert"}),
                await client.post("/images", json={"url": images.url("/img/2.png"), "filter": "thumbnail"}),
            ]
            assert [answer.status_code for answer in posted] == [202, 202], [answer.text for answer in posted]
            ids = [answer.json()["id"] for answer in posted]

            async def done() -> bool:
                states = [await jobs.get(image_id) for image_id in ids]
                return all(job is not None and job.status is JobStatus.DONE for job in states)

            await eventually(done, what="both jobs done")
            results = [await client.get(f"/images/{image_id}/result") for image_id in ids]
    finally:
        api.stop()
        worker.stop()
        await jobs.close()

    assert [result.status_code for result in results] == [200, 200]
    inverted = Image.open(io.BytesIO(results[0].content)).convert("RGB")
    original = Image.open(io.BytesIO(upload)).convert("RGB")
    assert inverted.size == (30, 20)
    assert inverted.tobytes() == bytes(255 - value for value in original.tobytes()), "the upload, inverted"
    store = open_blob_store(shared)
    assert await store.exists(store.upload_key(ids[0]))
    for folder in (api_dir, worker_dir):
        assert not folder.exists() or not any(path.is_file() for path in folder.rglob("*")), f"{folder} holds files"
