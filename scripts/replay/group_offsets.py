"""Kafka I/O for an offset reset: another group's state and offsets, the log's range, records, and the commit.

aiokafka 0.14 has no alter-offsets or list-offsets admin call. Committed offsets and the group's state come from
the admin client; log start/end and offsets by time from a consumer without a group (those calls work on
partitions it is not assigned); the reset itself is a commit by a consumer that joins nothing: it carries the
group's id, ``assign()``s the partitions and commits. The broker accepts that commit only while the group is
Empty (or Dead), the same rule Kafka's own tool enforces; otherwise it fails with UNKNOWN_MEMBER_ID.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, KafkaError

from core.clients import running
from core.consumer_group import GroupState, read_group_state, retrying
from core.kafka_connection import kafka_connection
from core.settings import Settings
from scripts.replay.reset_plan import ResetError

_UNKNOWN_TOPIC_OR_PARTITION = 3


class GroupNotEmptyError(ResetError):
    """The group has members: its offsets can only be reset once every worker has stopped."""

    def __init__(self, group: GroupState) -> None:
        members = "; ".join(member.describe() for member in group.members) or "none listed"
        super().__init__(
            f"group {group.group} is {group.state} with {len(group.members)} active member(s): {members}. "
            "Stop its workers first (or pass --wait-for-empty SECONDS)"
        )
        self.group = group


class GroupOffsets:
    """One group's offsets and the logs they point into, for the lifetime of an ``async with`` block."""

    def __init__(self, settings: Settings, group: str, *, timeout_s: float) -> None:
        self.settings = settings
        self.group = group
        self.timeout_s = timeout_s
        # Made on entering, each once the previous one started: a client never started is never left open.
        self._admin: AIOKafkaAdminClient
        self._consumer: AIOKafkaConsumer
        self._clients = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        request_timeout_ms = int(self.timeout_s * 1000)
        admin = AIOKafkaAdminClient(**kafka_connection(self.settings), request_timeout_ms=request_timeout_ms)
        async with self._deadline("connecting"):
            self._admin = await self._clients.enter_async_context(running(admin))
            consumer = AIOKafkaConsumer(
                **kafka_connection(self.settings),
                enable_auto_commit=False,
                request_timeout_ms=request_timeout_ms,
                client_id="image-replay-reader",
                isolation_level="read_committed",
            )
            self._consumer = await self._clients.enter_async_context(running(consumer))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._clients.aclose()

    def _deadline(self, what: str) -> _Deadline:
        return _Deadline(self.timeout_s, f"{what} (Kafka at {self.settings.kafka_bootstrap_servers})")

    async def describe_group(self) -> GroupState:
        async with self._deadline(f"describing group {self.group}"):
            return await read_group_state(self._admin, self.group)

    async def wait_until_inactive(
        self,
        timeout_s: float,
        *,
        on_wait: Callable[[GroupState], None] | None = None,
        poll_interval_s: float = 0.5,
    ) -> GroupState:
        """The group's state once it is Empty or Dead; GroupNotEmptyError if it still has members at the deadline.

        ``on_wait`` is called once, with the active group, when waiting begins (the CLI says so).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        announced = False
        while True:
            group = await self.describe_group()
            if group.inactive:
                return group
            if loop.time() >= deadline:
                raise GroupNotEmptyError(group)
            if not announced and on_wait is not None:
                on_wait(group)
            announced = True
            await asyncio.sleep(min(poll_interval_s, max(0.0, deadline - loop.time())))

    async def committed_offsets(self) -> dict[TopicPartition, int]:
        """The group's committed offsets (partitions without one are left out)."""
        async with self._deadline(f"reading the committed offsets of {self.group}"):
            committed = await retrying(lambda: self._admin.list_consumer_group_offsets(self.group))
        return {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}

    async def topic_partitions(self, topics: Iterable[str]) -> dict[str, list[int]]:
        """Each topic's partition numbers; ResetError naming the topics that do not exist."""
        names = sorted(set(topics))
        async with self._deadline("describing topics"):
            described = await self._admin.describe_topics(names)
        missing = [topic["topic"] for topic in described if topic["error_code"] == _UNKNOWN_TOPIC_OR_PARTITION]
        if missing:
            raise ResetError(f"unknown topic(s): {', '.join(sorted(missing))}")
        failed = [f"{topic['topic']} (error {topic['error_code']})" for topic in described if topic["error_code"]]
        if failed:
            raise ResetError(f"cannot describe topic(s): {', '.join(failed)}")
        return {topic["topic"]: sorted(p["partition"] for p in topic["partitions"]) for topic in described}

    async def check_partitions_exist(self, partitions: Iterable[TopicPartition]) -> None:
        """ResetError naming the partitions that do not exist (Kafka's tool says the same before planning)."""
        wanted = sorted(set(partitions))
        known = await self.topic_partitions(tp.topic for tp in wanted)
        missing = [f"{tp.topic}-{tp.partition}" for tp in wanted if tp.partition not in known[tp.topic]]
        if missing:
            raise ResetError(f"unknown partition(s): {', '.join(missing)}")

    async def log_range(
        self, partitions: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Log start and end offsets (the end is the high watermark: what consumers can read)."""
        async with self._deadline("reading log start and end offsets"):
            start = await self._consumer.beginning_offsets(partitions)
            end = await self._consumer.end_offsets(partitions)
        return start, end

    async def offsets_for_time(
        self, partitions: list[TopicPartition], timestamp_ms: int
    ) -> dict[TopicPartition, int | None]:
        """The first offset at or after ``timestamp_ms`` per partition; None where no record is that new."""
        async with self._deadline("looking up offsets by time"):
            found = await self._consumer.offsets_for_times(dict.fromkeys(partitions, timestamp_ms))
        return {tp: (None if found.get(tp) is None else found[tp].offset) for tp in partitions}

    async def read_values(
        self, ranges: Mapping[TopicPartition, tuple[int, int]]
    ) -> dict[TopicPartition, list[bytes | None]]:
        """The record values in ``[first, stop)`` per partition (what a replay will deliver again)."""
        wanted = {tp: span for tp, span in ranges.items() if span[0] < span[1]}
        values: dict[TopicPartition, list[bytes | None]] = {tp: [] for tp in wanted}
        if not wanted:
            return values
        self._consumer.assign(list(wanted))
        for tp, (first, _stop) in wanted.items():
            self._consumer.seek(tp, first)
        pending = set(wanted)
        async with self._deadline(f"reading the {sum(b - a for a, b in wanted.values())} records to be replayed"):
            while pending:
                batches = await self._consumer.getmany(*pending, timeout_ms=500)
                for tp, records in batches.items():
                    stop = wanted[tp][1]
                    values[tp].extend(record.value for record in records if record.offset < stop)
                for tp in list(pending):
                    # Positions move past transaction markers and compacted gaps too, so compare positions.
                    if await self._consumer.position(tp) >= wanted[tp][1]:
                        pending.discard(tp)
                        self._consumer.pause(tp)
        self._consumer.unsubscribe()
        return values

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` as the group's; GroupNotEmptyError if the broker refuses because members joined."""
        committer = AIOKafkaConsumer(
            **kafka_connection(self.settings),
            group_id=self.group,
            enable_auto_commit=False,
            client_id="image-replay-reset",
            request_timeout_ms=int(self.timeout_s * 1000),
        )
        async with self._deadline(f"committing the offsets of {self.group}"), running(committer):
            committer.assign(list(offsets))  # never subscribe: joining would make the group non-empty
            try:
                await committer.commit(dict(offsets))
            except CommitFailedError:
                raise GroupNotEmptyError(await self.describe_group()) from None
            except KafkaError as exc:
                raise ResetError(f"committing the offsets of {self.group} failed: {exc}") from exc


class _Deadline:
    """``asyncio.timeout`` that turns a timeout into a ResetError saying what did not answer."""

    def __init__(self, timeout_s: float, what: str) -> None:
        self._timeout = asyncio.timeout(timeout_s)
        self._timeout_s = timeout_s
        self._what = what

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            raise ResetError(f"no answer within {self._timeout_s:g} s while {self._what}") from None
