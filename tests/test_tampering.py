"""Whoever can write to the topic cannot aim an event at another job's files."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from core.blobs import open_blob_store
from core.jobs import utc_now
from core.settings import Settings
from schemas import BlobSource, FilterName, ImageProcessV2
from tests.support.events import as_record, blob_event
from tests.support.images import png_bytes
from tests.support.kafka_reads import read_topic
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually, produce, running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return worker_test_settings(kafka_bootstrap, tmp_path)


@pytest.mark.parametrize("target", ["upload", "result"])
async def test_an_event_naming_another_images_file_is_dead_lettered_and_changes_nothing(
    settings: Settings, target: str
) -> None:
    blobs = open_blob_store(settings)
    victim = await blob_event(blobs, png_bytes(seed=1), FilterName.SEPIA)
    async with running_worker(settings):
        await produce(settings, [as_record(victim)])
        result_key = blobs.result_key(str(victim.image_id))
        await eventually(lambda: blobs.exists(result_key), what="the victim's result")
        victims_result = await blobs.get(result_key)

        upload_key = blobs.upload_key(str(victim.image_id))
        stolen_key = upload_key if target == "upload" else result_key
        stolen = await blobs.get(stolen_key)
        forged = ImageProcessV2(
            event_id=uuid.uuid4(),
            image_id=victim.image_id if target == "result" else uuid.uuid4(),
            source=BlobSource(key=stolen_key, size_bytes=len(stolen), sha256=hashlib.sha256(stolen).hexdigest()),
            filter=FilterName.INVERT,
            requested_at=utc_now(),
        )
        await produce(settings, [as_record(forged)])

        async def dead_lettered() -> bool:
            return len(await read_topic(settings, settings.dlq_topic)) == 1

        await eventually(dead_lettered, what="the forged event dead-lettered")
    [letter] = await read_topic(settings, settings.dlq_topic)
    assert dict(letter.headers)["dlq.error.code"] == b"tampered"
    assert await blobs.get(result_key) == victims_result, "the victim's result is byte for byte unchanged"
