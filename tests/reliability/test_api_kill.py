"""Scenario 12: kill -9 of the API under load, as a crash mid-transaction.

The killed process leaves a transaction open; ``read_committed`` workers cannot read past it on its partitions
until the broker aborts it (the transaction timeout, 2 x SEND_TIMEOUT_S, plus the broker's abort check, 1 s
here). That stall is measured: the slowest job accepted by the replacement API right after the kill, from its
acceptance to done. Every 202 any client got must be processed, once.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import func, select

from core.jobs import JobStore
from core.settings import Settings
from core.tables import jobs_table
from producer.publisher import transaction_timeout_ms
from tests.reliability.conftest import StartApi, StartWorker
from tests.reliability.harness import Scale, count_figures, drain, post_jobs, record_figures, wait_until_ready
from tests.support.image_server import ImageServer
from tests.support.worker import eventually

ABORT_CHECK_S = 1.0  # transaction.abort.timed.out.transaction.cleanup.interval.ms of the launcher's broker
SLACK_S = 4.0  # a loaded 2-core machine: process start-up, polling, the worker's own pace


async def test_api_killed_mid_transaction_stalls_readers_only_until_the_broker_aborts_it(
    reliability_settings: Settings, images: ImageServer, start_api: StartApi, start_worker: StartWorker, scale: Scale
) -> None:
    settings = reliability_settings
    first = start_api(settings)
    start_worker(settings)
    await wait_until_ready(first.base_url)
    events, rate_per_s = scale.pick(300, 3000), float(scale.pick(60, 100))
    urls = [images.url(f"/img/{seed}.png") for seed in range(events)]
    half = len(urls) // 2

    before = asyncio.create_task(post_jobs(first.base_url, urls[:half], rate_per_s=rate_per_s, timeout_s=10.0))
    await eventually(lambda: _rows_at_least(settings, half // 2), what="half of the first load accepted")
    killed_at = dt.datetime.now(dt.UTC)
    first.kill()
    accepted_before = (await before).accepted

    second = start_api(settings)
    await wait_until_ready(second.base_url)
    after = await post_jobs(second.base_url, urls[half:], rate_per_s=rate_per_s)
    accepted = [*accepted_before, *after.accepted]
    drain_s = await drain(settings, accepted, timeout_s=scale.pick(120, 600))

    stall_s = await _slowest_from_acceptance_to_done(settings, after.accepted[: int(rate_per_s)])
    bound_s = transaction_timeout_ms(settings) / 1000 + ABORT_CHECK_S + SLACK_S
    figures = await count_figures(settings, accepted, images, drain_s=drain_s)
    line = record_figures(
        "api-kill",
        figures,
        accepted_before_kill=len(accepted_before),
        accepted_after=len(after.accepted),
        killed_at=killed_at.strftime("%H:%M:%S"),
        stall_s=round(stall_s, 1),
        stall_bound_s=bound_s,
    )
    assert after.statuses == {202: events - half}, line
    assert len(accepted_before) > 0, line
    assert figures.lost == 0, f"every 202 is processed: {line}"
    assert figures.recorded_twice == 0, line
    assert figures.done == len(accepted), line
    assert stall_s <= bound_s, f"readers were held up longer than the transaction timeout: {line}"


async def _rows_at_least(settings: Settings, count: int) -> bool:
    jobs = JobStore.from_url(settings.database_url)
    try:
        async with jobs.engine.connect() as connection:
            rows = await connection.scalar(select(func.count()).select_from(jobs_table))
    finally:
        await jobs.close()
    return (rows or 0) >= count


async def _slowest_from_acceptance_to_done(settings: Settings, image_ids: list[str]) -> float:
    """The longest time from a job's acceptance (``requested_at``) to done, among ``image_ids``."""
    jobs = JobStore.from_url(settings.database_url)
    try:
        async with jobs.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(jobs_table.c.requested_at, jobs_table.c.finished_at).where(
                        jobs_table.c.image_id.in_(image_ids)
                    )
                )
            ).all()
    finally:
        await jobs.close()
    waits: list[float] = [(done - requested).total_seconds() for requested, done in rows if done is not None]
    assert len(waits) == len(image_ids), "every job of the sample is done"
    return max(waits)
