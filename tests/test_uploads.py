"""Uploads that never became a job do not stay in the store: removed at once after a 503, or by the sweep."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.blobs import ThumbnailKind
from core.file_blobs import FileBlobStore
from core.jobs import Job, JobStatus, JobStore, utc_now
from core.schema import upgrade
from producer.intake import ORPHAN_UPLOAD_AGE_S, JobIntake
from producer.publisher import EventPublisher
from tests.support.api import api_client
from tests.support.images import png_bytes
from tests.support.settings import make_settings

NO_BROKER = "127.0.0.1:9"  # nothing listens there: every publish fails at once


async def test_the_upload_of_a_503_is_removed_at_once(tmp_path: Path) -> None:
    settings = make_settings(NO_BROKER, tmp_path, send_timeout_s=1.0)
    async with api_client(settings) as api:
        response = await api.post(
            "/images", files={"file": ("a.png", png_bytes(), "image/png")}, data={"filter": "blur"}
        )
    assert response.status_code == 503, response.text
    uploads = settings.storage_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


async def test_the_sweep_removes_old_uploads_no_job_names(tmp_path: Path) -> None:
    settings = make_settings(NO_BROKER, tmp_path)
    jobs = JobStore.from_url(settings.database_url)
    await upgrade(jobs.engine)
    blobs = FileBlobStore(settings.storage_dir)  # the folder store, whose files can be aged by hand
    intake = JobIntake(settings, jobs, blobs, EventPublisher(settings))
    old_orphan, old_with_job, recent = "uploads/orphan", "uploads/0b7c0000-0000-4000-8000-000000000001", "uploads/new"
    # A worker's outputs for a job with no row (yet): not uploads, never swept.
    outputs = [blobs.original_key("gone"), blobs.thumbnail_key("gone", ThumbnailKind.SOURCE), blobs.result_key("gone")]
    for key in (old_orphan, old_with_job, recent, *outputs):
        await blobs.put(key, b"image")
    long_ago = time.time() - ORPHAN_UPLOAD_AGE_S - 60
    for key in (old_orphan, old_with_job, *outputs):
        os.utime(blobs.path(key), (long_ago, long_ago))
    now = utc_now()
    await jobs.record_accepted(
        Job(
            image_id=old_with_job.removeprefix("uploads/"),
            status=JobStatus.QUEUED,
            filter="blur",
            source_url=None,
            blob_key=old_with_job,
            request_fingerprint="f" * 64,
            requested_at=now,
            updated_at=now,
        )
    )
    try:
        assert await intake.sweep_orphan_uploads() == 1
        assert (await blobs.exists(old_orphan), await blobs.exists(old_with_job), await blobs.exists(recent)) == (
            False,
            True,
            True,
        )
        assert [await blobs.exists(key) for key in outputs] == [True] * len(outputs)
    finally:
        await jobs.close()
