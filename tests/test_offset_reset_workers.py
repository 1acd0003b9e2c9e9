"""``image-replay reset --execute`` with real workers: exactly the planned records come back, skipped or re-run,
and a group with active members is refused until they leave."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError
from prometheus_client import CollectorRegistry

from core.consumer_group import Member
from core.jobs import JobStore
from core.processed import processed_among
from core.settings import Settings
from core.topics import ensure_topics
from schemas import ImageProcessV1, encode_event
from scripts.replay.group_offsets import GroupNotEmptyError, GroupOffsets
from scripts.replay.offset_reset import configure_parser, run
from tests.support.events import url_event
from tests.support.image_server import ImageServer
from tests.support.settings import make_settings
from tests.support.worker import committed_and_end_offsets, eventually, offsets_all_committed, running_worker

PARTITIONS = 3
PER_PARTITION = 4
RESET_TO = 2  # offsets 2 and 3 of every partition are replayed


def reset_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


async def all_committed(settings: Settings) -> bool:
    """Whether the group committed every partition's end (False while a fresh broker has no coordinator yet)."""
    try:
        return await offsets_all_committed(settings)
    except GroupCoordinatorNotAvailableError:
        return False


def skipped_duplicates(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("image_worker_records_total", {"outcome": "skipped_duplicate"}) or 0.0


async def processed_ids(settings: Settings, event_ids: list[str]) -> set[str]:
    store = JobStore.from_url(settings.database_url)
    try:
        return await processed_among(store.engine, event_ids)
    finally:
        await store.close()


async def publish_events(settings: Settings, images: ImageServer) -> dict[tuple[int, int], ImageProcessV1]:
    """Four events per partition, each for its own image path (so its fetches can be counted)."""
    await ensure_topics(settings)
    events = {
        (p, i): url_event(images.url(f"/img/{p * PER_PARTITION + i}.png"))
        for p in range(PARTITIONS)
        for i in range(PER_PARTITION)
    }
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for (partition, _), event in sorted(events.items()):
            await producer.send_and_wait(settings.images_topic, encode_event(event), partition=partition)
    finally:
        await producer.stop()
    return events


@pytest.mark.parametrize("reprocess", [False, True], ids=["skip", "reprocess"])
async def test_executed_reset_redelivers_exactly_the_planned_records(
    kafka_bootstrap: str,
    tmp_path: Path,
    database_url: str,
    images: ImageServer,
    capsys: pytest.CaptureFixture[str],
    reprocess: bool,
) -> None:
    settings = make_settings(
        kafka_bootstrap, tmp_path, database_url=database_url, allow_private_urls=True, commit_interval_s=0.2
    )
    events = await publish_events(settings, images)
    every_id = [str(event.event_id) for event in events.values()]
    async with running_worker(settings):
        await eventually(lambda: all_committed(settings), what="first pass committed")
    assert await processed_ids(settings, every_id) == set(every_id)
    paths = {key: f"/img/{key[0] * PER_PARTITION + key[1]}.png" for key in events}
    assert all(images.hits[path] == 1 for path in paths.values())
    replayed = {key for key in events if key[1] >= RESET_TO}
    replayed_ids = [str(events[key].event_id) for key in replayed]

    argv = ["--topic", settings.images_topic, "--to-offset", str(RESET_TO), "--execute", "--json"]
    assert await run(settings, reset_args(*argv, *(["--reprocess"] if reprocess else []))) == 0
    document = json.loads(capsys.readouterr().out)
    expected_redelivered = PARTITIONS * (PER_PARTITION - RESET_TO)
    assert document["executed"] is True
    assert document["totals"]["redelivered"] == document["totals"]["already_processed"] == expected_redelivered
    assert document["processed_marks_cleared"] == (expected_redelivered if reprocess else None)
    committed, _ = await committed_and_end_offsets(settings)
    assert committed == dict.fromkeys(range(PARTITIONS), RESET_TO)
    left = await processed_ids(settings, every_id)
    assert left == set(every_id) - set(replayed_ids) if reprocess else left == set(every_id)

    async with running_worker(settings) as worker:
        await eventually(lambda: all_committed(settings), what="replay committed")
        skipped = skipped_duplicates(worker.metrics.registry)
    assert await processed_ids(settings, every_id) == set(every_id)
    assert skipped == (0 if reprocess else expected_redelivered)
    for key, path in paths.items():
        assert images.hits[path] == (2 if reprocess and key in replayed else 1), path


async def group_member(kafka: GroupOffsets) -> Member:
    members: list[Member] = []

    async def stable() -> bool:
        group = await kafka.describe_group()
        members[:] = group.members
        return group.state == "Stable" and len(group.members) == 1

    await eventually(stable, timeout_s=30, what="worker joined its group")
    return members[0]


async def test_active_group_is_refused_naming_its_member_and_wait_for_empty_waits(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path)
    await ensure_topics(settings)
    argv = ["--topic", settings.images_topic, "--to-earliest", "--execute"]
    async with GroupOffsets(settings, settings.consumer_group, timeout_s=10) as kafka:
        async with running_worker(settings) as worker:
            member = await group_member(kafka)
            assert member.client_id == f"image-worker-{worker.worker_id}"

            for dry_run_or_not in (argv, argv[:-1]):
                assert await run(settings, reset_args(*dry_run_or_not)) == 1
                captured = capsys.readouterr()
                assert captured.out == ""
                assert captured.err.count("\n") == 1, captured.err
                details = (settings.consumer_group, "Stable", member.member_id, member.client_id, "--wait-for-empty")
                assert all(detail in captured.err for detail in details), captured.err

            # A member joining between the check and the commit: the broker refuses the commit itself.
            with pytest.raises(GroupNotEmptyError, match=member.member_id):
                await kafka.commit({TopicPartition(settings.images_topic, 0): 0})

            waiting = asyncio.create_task(run(settings, reset_args(*argv, "--wait-for-empty", "60")))
            err = ""

            async def announced() -> bool:
                nonlocal err
                err += capsys.readouterr().err
                return "waiting up to 60 s" in err

            await eventually(announced, timeout_s=30, what="reset waiting for the group")
            assert not waiting.done()
        assert await waiting == 0  # the worker left when the block ended
    committed, _ = await committed_and_end_offsets(settings)
    assert committed == dict.fromkeys(range(settings.topic_partitions), 0)
