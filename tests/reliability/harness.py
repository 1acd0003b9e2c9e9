"""What every reliability scenario shares: sizes, a load generator, the figures and how they are counted.

A scenario drives real ``image-api``/``image-worker`` processes and real brokers, injects its fault, waits (with
a deadline) for the system to drain, then counts from the outside: what the API accepted (202s), what the
database says is done, what the processed-ids table recorded, how often the image server was asked for each
image (executions), and what the DLQ holds. ``record_figures`` prints that as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import re
import socket
import time
from collections import Counter
from collections.abc import Iterable

import httpx
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from core.jobs import JobStatus, JobStore
from core.settings import Settings
from core.tables import jobs_table, processed_events_table
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic

FIGURES: list[str] = []
"""One line per scenario run, printed in pytest's terminal summary."""


class Scale(enum.Enum):
    """How big a scenario runs: SHORT in CI (a few minutes for the whole suite), LONG for release checks."""

    SHORT = "short"
    LONG = "long"

    def pick(self, short: int, long: int) -> int:
        return short if self is Scale.SHORT else long


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_until_ready(base_url: str, timeout_s: float = 60.0) -> None:
    """Poll ``/readyz`` until 200 (the API answers, the broker and the database too)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client, asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)


@dataclasses.dataclass
class LoadResult:
    """What a load generator saw: accepted image ids, and every answer's status and latency."""

    accepted: list[str] = dataclasses.field(default_factory=list)
    statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def slowest_s(self) -> float:
        return max(self.latencies_s, default=0.0)


async def post_jobs(
    base_url: str,
    urls: Iterable[str],
    *,
    rate_per_s: float,
    image_filter: str = "grayscale",
    timeout_s: float = 30.0,
) -> LoadResult:
    """POST one job per URL at about ``rate_per_s``, concurrently, recording every answer.

    A request that gets no answer within ``timeout_s`` counts as the error ``no-answer`` (the API must never
    hang); transport errors are counted by name.
    """
    result = LoadResult()
    interval_s = 1.0 / rate_per_s
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as client:

        async def post(url: str) -> None:
            started = time.monotonic()
            try:
                response = await client.post("/images", json={"url": url, "filter": image_filter})
            except httpx.TimeoutException:
                result.errors["no-answer"] += 1
                return
            except httpx.HTTPError as exc:
                result.errors[type(exc).__name__] += 1
                return
            result.latencies_s.append(time.monotonic() - started)
            result.statuses[response.status_code] += 1
            if response.status_code == 202:
                result.accepted.append(response.json()["id"])

        tasks = []
        next_at = time.monotonic()
        for url in urls:
            tasks.append(asyncio.create_task(post(url)))
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*tasks)
    return result


@dataclasses.dataclass
class Figures:
    """The outcome of a scenario, counted from the outside."""

    accepted: int
    done: int
    failed: int
    lost: int
    recorded_twice: int
    executed_twice: int
    dead_lettered: int
    drain_s: float

    def line(self, scenario: str, **extra: object) -> str:
        fields = dataclasses.asdict(self) | extra
        rendered = " ".join(
            f"{name}={value:.1f}" if isinstance(value, float) else f"{name}={value}" for name, value in fields.items()
        )
        return f"{scenario}: {rendered}"


async def count_figures(
    settings: Settings, accepted_ids: Iterable[str], images: ImageServer, *, drain_s: float
) -> Figures:
    """Count what became of ``accepted_ids``. Executions are the image server's hits per path."""
    accepted = set(accepted_ids)
    jobs = JobStore.from_url(settings.database_url)
    try:
        async with jobs.engine.connect() as connection:
            rows = (await connection.execute(select(jobs_table.c.image_id, jobs_table.c.status))).all()
            twice = (
                await connection.execute(
                    select(func.count()).select_from(
                        select(processed_events_table.c.image_id)
                        .group_by(processed_events_table.c.image_id)
                        .having(func.count() > 1)
                        .subquery()
                    )
                )
            ).scalar_one()
    finally:
        await jobs.close()
    status = {image_id: value for image_id, value in rows}
    done = sum(1 for image_id in accepted if status.get(image_id) == JobStatus.DONE.value)
    failed = sum(1 for image_id in accepted if status.get(image_id) == JobStatus.FAILED.value)
    dead = await read_topic(settings, settings.dlq_topic)
    return Figures(
        accepted=len(accepted),
        done=done,
        failed=failed,
        lost=len(accepted) - done - failed,
        recorded_twice=int(twice),
        executed_twice=sum(1 for hits in images.hits.values() if hits > 1),
        dead_lettered=len(dead),
        drain_s=drain_s,
    )


def record_figures(scenario: str, figures: Figures, **extra: object) -> str:
    """Keep the scenario's one line for the terminal summary (and return it, e.g. for an assertion message)."""
    line = figures.line(scenario, **extra)
    FIGURES.append(line)
    return line


async def drain(settings: Settings, accepted_ids: Iterable[str], *, timeout_s: float) -> float:
    """Wait until every accepted job is done or failed; return how long that took."""
    wanted = set(accepted_ids)
    started = time.monotonic()
    finished: set[str] = set()
    jobs = JobStore.from_url(settings.database_url)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    async with jobs.engine.connect() as connection:
                        finished = {
                            image_id
                            for (image_id,) in await connection.execute(
                                select(jobs_table.c.image_id).where(
                                    jobs_table.c.status.in_([JobStatus.DONE.value, JobStatus.FAILED.value])
                                )
                            )
                        }
                except DBAPIError:  # no process has created the tables yet: nothing is finished
                    finished = set()
                if wanted <= finished:
                    return time.monotonic() - started
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(
            f"{len(wanted - finished)} of {len(wanted)} accepted jobs not finished within {timeout_s} s"
        ) from None
    finally:
        await jobs.close()


# --- Worker logs: partition ownership and commits (scenarios 1 and 5) ---------------------------------------------
#
# A worker logs "assigned [...]" after each rebalance and "revoked [...]" when a rebalance starts (its drain and
# final commit run after that line, while it still owns the partitions: the eager protocol revokes before
# rejoining). At debug level it logs "committed {...}" after each commit the broker accepted; it always logs
# "commit of {...} failed: <error>", and aiokafka logs the broker's error code first ("OffsetCommit failed for
# group ... due to group error (...)"). Partitions appear as 'topic[N]'.

_PARTITION_RE = re.compile(r"\[(\d+)\]'")
_BROKER_GROUP_ERRORS = ("RebalanceInProgressError", "IllegalGenerationError", "UnknownMemberIdError")


def _partitions(text: str) -> frozenset[int]:
    return frozenset(int(number) for number in _PARTITION_RE.findall(text))


def owned_partitions(log: str) -> frozenset[int] | None:
    """The partitions a worker owns according to its log: its last assignment, ``None`` while revoked or before."""
    owned: frozenset[int] | None = None
    for line in log.splitlines():
        if "consumer.worker: assigned [" in line:
            owned = _partitions(line)
        elif "consumer.worker: revoked [" in line:
            owned = None
    return owned


def commit_ownership_problems(log: str) -> list[str]:
    """Every commit in one worker's log that breaks the ownership rules; ``[]`` when none does.

    Checked, reading the log in order: (1) each commit, accepted ("committed {...}") or failed ("commit of {...}
    failed"), names only partitions of the worker's current assignment (the last "assigned" line; a revoked
    partition stays owned until the next assignment, as its drain commits inside the revocation); (2) a revocation
    names only owned partitions; (3) a failed commit failed with ``CommitFailedError`` (not ``IllegalStateError``,
    aiokafka's refusal to commit an unassigned partition, nor any other error), and the broker's answer logged just
    before it is one of the group errors (rebalance in progress, illegal generation, unknown member).
    """
    problems: list[str] = []
    owned: frozenset[int] = frozenset()
    broker_error: str | None = None
    for number, line in enumerate(log.splitlines(), start=1):
        if "consumer.worker: assigned [" in line:
            owned = _partitions(line)
        elif "consumer.worker: revoked [" in line:
            if not _partitions(line) <= owned:
                problems.append(f"line {number}: revoked what it did not own ({sorted(owned)}): {line}")
        elif "OffsetCommit failed for group" in line:
            broker_error = line
        elif "consumer.worker: committed {" in line or "consumer.worker: commit of {" in line:
            committed = _partitions(line.split(" failed: ")[0])
            if not committed or not committed <= owned:
                problems.append(f"line {number}: commit outside the assignment {sorted(owned)}: {line}")
            if " failed: " in line:
                error = line.split(" failed: ", 1)[1]
                if not error.startswith("CommitFailedError("):
                    problems.append(f"line {number}: commit failed with an unexpected error: {line}")
                elif broker_error is None or not any(name in broker_error for name in _BROKER_GROUP_ERRORS):
                    problems.append(f"line {number}: commit failed without a broker group error before it: {line}")
            broker_error = None
    return problems
