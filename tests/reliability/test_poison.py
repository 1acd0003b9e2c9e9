"""Scenarios 6 and 7: poison records among good ones, and a DLQ that refuses them for a while.

6. About 1% poison of different kinds (garbage bytes, wrong-schema JSON and an unknown event version produced
   straight onto the topic; a corrupt image and 404 URLs through the API) among good jobs, two real workers:
   exactly one dead letter per poison record, with its metadata; every good job done; and the good records behind
   a poison record in its partition are not held up for longer than the retry budget.
7. The DLQ topic only takes tiny records (``max.message.bytes``), so every dead-letter write fails: the poison
   record stays uncommitted while the worker keeps trying, the good records around it are done, and once the
   limit is raised exactly one dead letter appears and nothing is lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
import uuid

import httpx
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from core.settings import Settings
from core.topics import TopicMissing
from schemas import encode_event
from tests.reliability.conftest import StartApi, StartWorker
from tests.reliability.harness import Scale, count_figures, drain, post_jobs, record_figures, wait_until_ready
from tests.reliability.hostile import create_job_schema, dead_letters, headers_of, missing_metadata
from tests.support.events import Record, as_record, url_event
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic
from tests.support.worker import (
    alter_topic_configs,
    committed_and_end_offsets,
    create_topic_with_configs,
    eventually,
    offsets_all_committed,
    produce,
)

WORKERS = 2
STALL_SLACK_S = 10.0
"""Allowed on top of the retry budget for a partition's committed offset to stand at a poison record: processing
it, the DLQ ack, the commit interval and the sampling period, on a loaded 2-core CI machine."""


def _unknown_version() -> bytes:
    document = json.loads(encode_event(url_event("http://x.example/a.png")))
    return json.dumps(document | {"version": 99}).encode()


async def test_poison_mix_is_dead_lettered_once_and_stalls_nothing(
    reliability_settings: Settings, images: ImageServer, start_api: StartApi, start_worker: StartWorker, scale: Scale
) -> None:
    settings = reliability_settings
    api = start_api(settings)
    workers = [start_worker(settings) for _ in range(WORKERS)]
    await wait_until_ready(api.base_url)
    events, rate_per_s = scale.pick(400, 4000), float(scale.pick(25, 60))
    urls = [images.url(f"/img/{seed}.png") for seed in range(events)]

    each_kind = scale.pick(1, 7)  # six kinds: 6 poison in 400 (1.5 %), 42 in 4000 (about 1 %)
    raw_poison: dict[bytes, bytes] = {}
    for _ in range(each_kind):
        raw_poison[b"garbage-" + uuid.uuid4().hex.encode()] = b"\x00\xff\xfe not json at all \x81"
        raw_poison[b"schema-" + uuid.uuid4().hex.encode()] = json.dumps(
            {"type": "image_process", "version": 1, "x": 1}
        ).encode()
        raw_poison[b"version-" + uuid.uuid4().hex.encode()] = _unknown_version()
    api_poison = {f"/corrupt.png?n={n}": "corrupt_image" for n in range(each_kind)} | {
        f"/missing-{n}.png": "http_4xx" for n in range(2 * each_kind)
    }
    api_poison_ids: dict[str, str] = {}  # image id -> path

    async def inject_poison() -> None:
        """Two bursts, at a third and at two thirds of the load, so poison lands between good records."""
        raw, paths = list(raw_poison.items()), list(api_poison)
        raw_half, paths_half = len(raw) // 2 + 1, len(paths) // 2
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            for raw_part, path_part in ((raw[:raw_half], paths[:paths_half]), (raw[raw_half:], paths[paths_half:])):
                await asyncio.sleep(events / rate_per_s / 3)  # the fault schedule, not synchronisation
                await produce(settings, raw_part)
                for path in path_part:
                    response = await client.post("/images", json={"url": images.url(path), "filter": "sepia"})
                    assert response.status_code == 202, response.text
                    api_poison_ids[response.json()["id"]] = path

    commits: list[tuple[float, dict[int, int]]] = []  # (wall-clock time, committed offset per partition)
    sampler = asyncio.create_task(_sample_commits(settings, commits))
    load, _ = await asyncio.gather(post_jobs(api.base_url, urls, rate_per_s=rate_per_s), inject_poison())
    accepted = [*load.accepted, *api_poison_ids]
    drain_s = await drain(settings, accepted, timeout_s=scale.pick(120, 600))
    poison_count = len(raw_poison) + len(api_poison)
    await eventually(
        lambda: _dead_letter_count_at_least(settings, poison_count), timeout_s=60, what="every poison dead-lettered"
    )
    await eventually(lambda: offsets_all_committed(settings), timeout_s=60, what="every partition committed to its end")
    commits.append((time.time(), (await committed_and_end_offsets(settings))[0]))
    sampler.cancel()

    dead = await dead_letters(settings)
    figures = await count_figures(settings, accepted, images, drain_s=drain_s)
    stalls_s = await _commit_stalls_at_poison(settings, dead, commits)
    retries = sum(worker.log().count(" failed (") for worker in workers)
    budget_s = settings.max_attempts * settings.retry_backoff_max_s
    line = record_figures(
        "poison-mix",
        figures,
        poison=poison_count,
        workers=WORKERS,
        worst_commit_stall_at_poison_s=max(stalls_s),
        stall_bound_s=budget_s + STALL_SLACK_S,
        transient_retries=retries,
    )

    assert load.statuses == {202: events}, line
    by_key = collections.Counter(record.key for record in dead)
    expected_keys = [*raw_poison, *(image_id.encode() for image_id in api_poison_ids)]
    assert by_key == collections.Counter(expected_keys), f"exactly one dead letter per poison record: {line}"
    for record in dead:
        assert missing_metadata(record) == [], record.key
        headers = headers_of(record)
        assert headers["dlq.original.topic"] == settings.images_topic
        assert headers["dlq.consumer_group"] == settings.consumer_group
        assert headers["dlq.attempts"] == "1", "every kind here is permanent: no retries"
        if record.key in raw_poison:
            assert record.value == raw_poison[record.key], "a dead letter keeps the original value"
            raw_code = "unsupported_version" if record.key.startswith(b"version-") else "undecodable"
            assert headers["dlq.error.code"] == raw_code, headers
            assert "undecodable record" in headers["dlq.error.message"]
        else:
            path = api_poison_ids[record.key.decode()]
            assert headers["dlq.error.code"] == api_poison[path], headers
    assert figures.done == events, line
    assert figures.failed == len(api_poison), line
    assert figures.lost == 0, line
    assert figures.recorded_twice == 0, line
    # A transient failure (SQLite busy under load) is retried and fetches again: every extra fetch is a retry.
    assert figures.executed_twice <= retries, line
    assert figures.dead_lettered == poison_count, line
    assert len(stalls_s) == poison_count, stalls_s
    assert max(stalls_s) <= budget_s + STALL_SLACK_S, f"a partition stalled at a poison record: {line}"


async def _dead_letter_count_at_least(settings: Settings, count: int) -> bool:
    return len(await dead_letters(settings)) >= count


async def _sample_commits(settings: Settings, commits: list[tuple[float, dict[int, int]]]) -> None:
    """Record the group's committed offsets every 0.25 s until cancelled."""
    while True:
        with contextlib.suppress(KafkaError, TopicMissing):
            commits.append((time.time(), (await committed_and_end_offsets(settings))[0]))
        await asyncio.sleep(0.25)


async def _commit_stalls_at_poison(
    settings: Settings, dead: list[ConsumerRecord], commits: list[tuple[float, dict[int, int]]]
) -> list[float]:
    """Per poison record: how long its partition's committed offset stood exactly at it, i.e. from the first sample
    past the record before it (or the poison's append, at offset 0) to the first sample past the poison itself.

    Measured against the record before it, so the backlog that load builds up on a busy machine cancels out.
    """

    def first_past(partition: int, offset: int) -> float:
        return min((at for at, committed in commits if committed.get(partition, 0) > offset), default=float("inf"))

    stalls = []
    for letter in dead:
        headers = headers_of(letter)
        partition, offset = int(headers["dlq.original.partition"]), int(headers["dlq.original.offset"])
        appended_s = int(headers["dlq.original.timestamp"]) / 1000
        before_s = first_past(partition, offset - 1) if offset > 0 else appended_s
        stalls.append(first_past(partition, offset) - max(before_s, appended_s))
    return stalls


async def test_poison_stays_uncommitted_while_the_dlq_refuses_it(
    reliability_settings: Settings, images: ImageServer, start_worker: StartWorker, scale: Scale
) -> None:
    settings = reliability_settings.model_copy(update={"topic_partitions": 1})  # one partition: one commit position
    await create_topic_with_configs(
        settings, settings.dlq_topic, {"max.message.bytes": "200"}
    )  # smaller than any dead letter
    good = [url_event(images.url(f"/img/{seed}.png"), "invert") for seed in range(scale.pick(40, 400))]
    poison: Record = (b"poison-" + uuid.uuid4().hex.encode(), b"\x00 not an event")
    half = len(good) // 2
    await produce(settings, [*map(as_record, good[:half]), poison, *map(as_record, good[half:])])
    [poison_record] = [r for r in await read_topic(settings, settings.images_topic) if r.key == poison[0]]

    await create_job_schema(settings)
    worker = start_worker(settings)
    good_ids = [str(event.image_id) for event in good]
    await drain(settings, good_ids, timeout_s=scale.pick(60, 300))
    # The worker keeps trying: wait for a few refused writes (time passes with the record still at risk).
    await eventually(
        lambda: _refusals(worker.log(), 3), timeout_s=60, what="three refused dead-letter writes in the log"
    )
    # Everything before the poison record is committed, nothing at or after it (the good records behind it are done
    # but stay uncommitted: a crash now would redo them, never skip the poison).
    await eventually(
        lambda: _committed_exactly(settings, poison_record.offset), what="the commit held at the poison record"
    )
    refused = worker.log().count("could not dead-letter")
    await eventually(lambda: _refusals(worker.log(), refused + 2), timeout_s=60, what="two more refused writes")
    assert await _committed_exactly(settings, poison_record.offset), "the commit moved past an undelivered poison"
    refusals_before_fix = worker.log().count("could not dead-letter")
    assert await dead_letters(settings) == []
    assert worker.process.poll() is None, worker.log()

    fixed_at = asyncio.get_running_loop().time()
    await alter_topic_configs(settings, settings.dlq_topic, {"max.message.bytes": "1048588"})
    await eventually(lambda: offsets_all_committed(settings), timeout_s=60, what="offsets committed after the fix")
    recovery_s = asyncio.get_running_loop().time() - fixed_at

    dead = await dead_letters(settings)
    figures = await count_figures(settings, good_ids, images, drain_s=recovery_s)
    line = record_figures(
        "dlq-write-fails",
        figures,
        refused_writes=refusals_before_fix,
        held_at_offset=poison_record.offset,
        recovery_after_fix_s=recovery_s,
    )
    assert [(record.key, record.value) for record in dead] == [poison], f"exactly one dead letter: {line}"
    assert missing_metadata(dead[0]) == [], line
    assert figures.done == len(good), line
    assert figures.lost == 0, line
    assert figures.recorded_twice == 0, line
    assert figures.executed_twice == 0, line
    worker.terminate()
    assert await asyncio.to_thread(worker.wait, 30) == 0, worker.log()


async def _committed_exactly(settings: Settings, offset: int) -> bool:
    committed, _ = await committed_and_end_offsets(settings)
    return committed.get(0) == offset


async def _refusals(log: str, count: int) -> bool:
    return log.count("could not dead-letter") >= count
