"""The lag history: bounded, sampling only once asked, stopping when nobody asks and at shutdown."""

from __future__ import annotations

import datetime as dt

from core.clients import KafkaUnavailable
from core.consumer_group import GroupOverview, PartitionLag
from core.lag_history import LagHistory
from tests.support.worker import eventually


def overview(total_lag: int, at: dt.datetime | None = None) -> GroupOverview:
    row = PartitionLag(
        partition=0, committed_offset=0, log_start_offset=0, log_end_offset=total_lag, lag=total_lag, owner=None
    )
    return GroupOverview(
        group="workers",
        topic="images",
        state="Empty",
        members=[],
        partitions=[row],
        total_lag=total_lag,
        read_at=at or dt.datetime.now(dt.UTC),
    )


class Sampler:
    """Overviews with a growing lag; fails the calls listed in ``failing``."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.calls = 0
        self.failing = failing

    async def __call__(self) -> GroupOverview:
        self.calls += 1
        if self.calls in self.failing:
            raise KafkaUnavailable("no broker")
        return overview(self.calls)


def test_the_buffer_keeps_one_window_of_samples() -> None:
    history = LagHistory(Sampler(), interval_s=10, window_s=900)
    now = dt.datetime.now(dt.UTC)
    for lag in range(200):
        history.record(overview(lag, now - dt.timedelta(seconds=200 - lag)))
    samples = history.samples()
    assert len(samples) == 90, "15 minutes of one sample per 10 s"
    assert [s.total_lag for s in samples] == list(range(110, 200)), "the oldest go first"
    assert samples[-1].lag_by_partition == {0: 199}

    history.record(overview(7, now - dt.timedelta(hours=1)))
    assert history.samples()[-1].total_lag == 199, "a sample older than the window is not shown"


async def test_sampling_starts_when_asked_survives_failures_and_stops() -> None:
    sampler = Sampler(failing=frozenset({2}))
    history = LagHistory(sampler, interval_s=0.01, window_s=60)
    assert not history.running
    assert sampler.calls == 0, "nobody asked: no request"

    history.ensure_running()
    history.ensure_running()
    await eventually(lambda: _at_least(history, 3), timeout_s=10, what="three samples")
    assert sampler.calls >= 4, "a failed sample is skipped, the next one taken"
    assert [s.total_lag for s in history.samples()][:2] == [1, 3]

    await history.stop()
    assert not history.running
    calls = sampler.calls
    history.ensure_running()
    await eventually(lambda: _calls_beyond(sampler, calls), timeout_s=10, what="sampling again")
    await history.stop()


async def test_sampling_stops_by_itself_when_nobody_asks() -> None:
    sampler = Sampler()
    history = LagHistory(sampler, interval_s=0.01, window_s=0.2)
    history.ensure_running()
    await eventually(lambda: _stopped(history), timeout_s=10, what="the sampler stopping")
    assert sampler.calls > 1, "it sampled while wanted"


async def _at_least(history: LagHistory, count: int) -> bool:
    return len(history.samples()) >= count


async def _calls_beyond(sampler: Sampler, calls: int) -> bool:
    return sampler.calls > calls


async def _stopped(history: LagHistory) -> bool:
    return not history.running
