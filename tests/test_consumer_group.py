"""The workers' group as the admin pages show it, read from the real broker with a worker running and without."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.consumer_group import GroupOverview, describe_consumer_group
from core.settings import Settings
from tests.support.events import as_record, url_event
from tests.support.image_server import ImageServer
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually, produce, running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return worker_test_settings(kafka_bootstrap, tmp_path, shutdown_timeout_s=5.0)


def caught_up(overview: GroupOverview) -> bool:
    return (
        overview.state == "Stable"
        and len(overview.members) == 1
        and overview.total_lag == 0
        and all(row.committed_offset == row.log_end_offset for row in overview.partitions)
    )


async def test_members_assignment_and_lag_with_a_worker_and_without(
    worker_settings: Settings, images: ImageServer
) -> None:
    settings = worker_settings
    never_ran = await describe_consumer_group(settings)
    assert never_ran.state == "Dead", "a group that never existed"
    assert never_ran.members == []
    assert never_ran.partitions == [], "the topic does not exist yet"

    await produce(settings, [as_record(url_event(images.url(f"/img/{seed}.png"))) for seed in range(6)])
    async with running_worker(settings) as worker:
        latest: list[GroupOverview] = []

        async def worker_caught_up() -> bool:
            latest[:] = [await describe_consumer_group(settings)]
            return caught_up(latest[0])

        await eventually(worker_caught_up, what="the worker owning every partition with lag 0")
        [overview] = latest
        [member] = overview.members
        assert member.client_id == f"image-worker-{worker.worker_id}"
        assert member.partitions == [0, 1, 2]
        assert [row.owner for row in overview.partitions] == [member.member_id] * 3
        assert sum(row.log_end_offset for row in overview.partitions) == 6

    await produce(settings, [as_record(url_event(images.url("/img/7.png"))) for _ in range(4)])
    stopped = await describe_consumer_group(settings)
    assert stopped.state == "Empty"
    assert stopped.members == []
    assert stopped.total_lag == 4, "records nobody consumed"
    assert sum(row.lag for row in stopped.partitions) == 4
    assert all(row.owner is None for row in stopped.partitions)
    assert [row.committed_offset for row in stopped.partitions] == [row.log_end_offset for row in overview.partitions]
