"""The dead-letter overview against the real broker: poisoned records as a worker wrote them, bounds, empty topics."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from core.dead_letter_overview import dead_letter_overview
from core.redrive import RedriveOptions, Verdict, redrive
from core.settings import Settings
from core.topics import ensure_topics
from tests.support.dead_letters import put_dead_letters, synthetic_letters
from tests.support.events import as_record, url_event
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually, produce, running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return worker_test_settings(kafka_bootstrap, tmp_path, max_attempts=2, shutdown_timeout_s=5.0)


async def test_poisoned_records_counted_described_and_marked_once_redriven(
    worker_settings: Settings, images: ImageServer
) -> None:
    settings = worker_settings
    missing = url_event(images.url("/missing.png"))
    await produce(settings, [(b"poison-1", b"not an event"), as_record(missing)])
    async with running_worker(settings):
        await eventually(lambda: _dead_letters(settings, 2), what="both records dead-lettered")

    overview = await dead_letter_overview(settings)
    assert overview.counts == {"undecodable": 1, "http_4xx": 1}
    assert (overview.scanned, overview.truncated) == (2, False)
    assert overview.progress_group == f"{settings.consumer_group}.redrive"
    assert [p.redriven_before for p in overview.partitions] == [None] * 3

    [letter] = (await dead_letter_overview(settings, error_code="http_4xx")).dead_letters
    assert (letter.image_id, letter.event_id) == (missing.image_id, missing.event_id)
    assert letter.key == str(missing.image_id)
    assert letter.key is not None
    assert letter.error_code == "http_4xx"
    assert letter.error_class is not None
    assert letter.error_class.endswith("HttpClientError")
    assert letter.error_message
    assert letter.attempts == 1, "a 4xx is permanent: no retry"
    [original] = [r for r in await read_topic(settings, settings.images_topic) if r.key == letter.key.encode()]
    assert letter.original_topic == settings.images_topic
    assert (letter.original_partition, letter.original_offset) == (original.partition, original.offset)
    assert (letter.redrive_count, letter.redriven) == (0, False)

    [poison] = (await dead_letter_overview(settings, error_code="undecodable")).dead_letters
    assert (poison.key, poison.image_id, poison.event_id) == ("poison-1", None, None)

    report = await redrive(settings, RedriveOptions(execute=True))
    assert report.total(Verdict.REDRIVE) == 2
    after = await dead_letter_overview(settings)
    assert [letter.redriven for letter in after.dead_letters] == [True, True]


async def test_missing_and_empty_topics_read_nothing_and_big_ones_are_cut(worker_settings: Settings) -> None:
    settings = worker_settings
    missing = await dead_letter_overview(settings, timeout_s=10)
    assert (missing.counts, missing.partitions, missing.dead_letters) == ({}, [], [])

    await ensure_topics(settings)
    empty = await dead_letter_overview(settings, timeout_s=10)
    assert (empty.counts, empty.scanned, empty.truncated) == ({}, 0, False)
    assert [(p.log_start_offset, p.log_end_offset) for p in empty.partitions] == [(0, 0)] * 3

    letters = synthetic_letters(7)
    await put_dead_letters(settings, letters)
    full = await dead_letter_overview(settings, limit=3)
    assert (full.counts, full.scanned, full.truncated) == ({"http_4xx": 7}, 7, False)
    assert [d.key for d in full.dead_letters] == [key.decode() for key, _, _ in reversed(letters[-3:])], "newest first"

    cut = await dead_letter_overview(settings, scan_limit=1)
    non_empty = sum(1 for p in cut.partitions if p.log_end_offset)
    assert (cut.scanned, cut.truncated) == (non_empty, True), "one record per partition read, the rest left out"
    assert len({uuid.UUID(d.key or "") for d in cut.dead_letters}) == non_empty


async def _dead_letters(settings: Settings, count: int) -> bool:
    return len(await read_topic(settings, settings.dlq_topic)) >= count
