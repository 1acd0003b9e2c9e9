"""The workers' consumer group as an operator sees it: its state, its members and what they own, and the lag of
each partition of the main topic.

aiokafka 0.14 has no list-offsets admin call: the group's state, its members' assignments and its committed
offsets come from an admin client; log start and end offsets from a consumer that joins no group (those calls
work on partitions it is not assigned). A :class:`GroupReader` keeps both open between looks: starting and
stopping a consumer each time took about 110 ms of the console's Workers page. The API closes them once nobody
has looked for a while (core/lag_history.py), so nobody looking still means no requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocol, ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError, for_code
from pydantic import BaseModel, ConfigDict

from core.clients import kafka_deadline, stop_within
from core.kafka_connection import kafka_connection
from core.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
DESCRIBE_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0
INACTIVE_STATES = frozenset({"Empty", "Dead"})
_UNKNOWN_TOPIC_OR_PARTITION = 3


@dataclass(frozen=True, slots=True)
class Member:
    """An active member of a consumer group, as ``kafka-consumer-groups --describe --members`` names it."""

    member_id: str
    client_id: str
    host: str
    assignment: tuple[TopicPartition, ...] = ()

    def describe(self) -> str:
        return f"{self.member_id} (client {self.client_id}, host {self.host.lstrip('/')})"


@dataclass(frozen=True, slots=True)
class GroupState:
    """A consumer group's state (Empty, Stable, PreparingRebalance, ..., Dead: never existed) and its members."""

    group: str
    state: str
    members: tuple[Member, ...]

    @property
    def inactive(self) -> bool:
        """Whether offsets may be reset: Kafka's rule, only Empty or Dead (never existed) groups."""
        return self.state in INACTIVE_STATES and not self.members


async def read_group_state(admin: AIOKafkaAdminClient, group: str) -> GroupState:
    """``group``'s state and members with their assignments; the caller bounds the time (retriable errors, such
    as no coordinator yet on a fresh cluster, are retried)."""
    described = await retrying(lambda: _describe(admin, group))
    consumer_protocol = described["protocol_type"] == ConsumerProtocol.PROTOCOL_TYPE
    members = tuple(
        Member(
            member["member_id"],
            member["client_id"],
            member["client_host"],
            _assignment(member["member_assignment"]) if consumer_protocol else (),
        )
        for member in described["members"]
    )
    return GroupState(group, described["state"], members)


async def _describe(admin: AIOKafkaAdminClient, group: str) -> dict[str, Any]:
    # One group per request: aiokafka 0.14 misreads a DescribeGroups response that holds several.
    [response] = await admin.describe_consumer_groups([group])
    [described] = response.to_object()["groups"]
    if described["error_code"]:
        raise for_code(described["error_code"])(f"describing group {group}")
    return dict(described)


def _assignment(encoded: bytes) -> tuple[TopicPartition, ...]:
    """A member's partitions; none while a rebalance has not handed them out yet (empty bytes)."""
    if not encoded:
        return ()
    try:
        return tuple(sorted(ConsumerProtocolMemberAssignment.decode(encoded).partitions()))
    except Exception:  # a client with its own assignment format: its members are listed without partitions
        logger.debug("cannot decode a member assignment of %d bytes", len(encoded), exc_info=True)
        return ()


async def retrying(call: Callable[[], Awaitable[T]], *, pause_s: float = 0.2) -> T:
    """``call()`` again after retriable errors (e.g. no group coordinator yet on a fresh cluster); the caller's
    deadline bounds the retries."""
    while True:
        try:
            return await call()
        except KafkaError as exc:
            if not exc.retriable:
                raise
            logger.debug("retrying after %r", exc)
        await asyncio.sleep(pause_s)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GroupMember(_Frozen):
    """A member of the workers' group and the partitions of the main topic it owns."""

    member_id: str
    client_id: str
    host: str
    partitions: list[int]


class PartitionLag(_Frozen):
    """One partition of the main topic: how far the group got and who owns it.

    ``lag`` counts from the committed offset, or from the log start when the group committed none (the workers
    start from the earliest record).
    """

    partition: int
    committed_offset: int | None
    log_start_offset: int
    log_end_offset: int
    lag: int
    owner: str | None
    """The member id of the member it is assigned to; None when nobody owns it."""


class GroupOverview(_Frozen):
    """The workers' group (CONSUMER_GROUP) on the main topic (IMAGES_TOPIC), as read at ``read_at``."""

    group: str
    topic: str
    state: str
    """Stable, Empty, PreparingRebalance, CompletingRebalance, or Dead (the group does not exist)."""
    members: list[GroupMember]
    partitions: list[PartitionLag]
    """Empty while the topic does not exist."""
    total_lag: int
    read_at: dt.datetime


async def describe_consumer_group(settings: Settings, *, timeout_s: float = DESCRIBE_TIMEOUT_S) -> GroupOverview:
    """The workers' group, read once by clients that are closed afterwards (see :class:`GroupReader`)."""
    reader = GroupReader(settings, timeout_s=timeout_s)
    try:
        return await reader.describe()
    finally:
        await reader.close()


class GroupReader:
    """Reads the workers' group through an admin client and a consumer that stay open from one look to the next.

    A look that fails closes them, so the next one starts afresh (a broker that came back, a new leader).
    """

    def __init__(self, settings: Settings, *, timeout_s: float = DESCRIBE_TIMEOUT_S) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None
        self._starting = asyncio.Lock()

    async def describe(self) -> GroupOverview:
        """The group's state, members, and per partition of IMAGES_TOPIC the committed and end offsets, the lag and
        the owner. Raises :class:`core.clients.KafkaUnavailable` when Kafka does not answer within the timeout."""
        group, topic = self._settings.consumer_group, self._settings.images_topic
        try:
            async with kafka_deadline(self._settings, self._timeout_s, f"describing consumer group {group}"):
                admin, consumer = await self._started()
                state = await read_group_state(admin, group)
                committed = await retrying(lambda: admin.list_consumer_group_offsets(group))
                partitions = await retrying(lambda: topic_partitions(admin, topic))
                log_start, log_end = await log_range(consumer, partitions)
        except BaseException:
            await self.close()
            raise
        committed_offsets = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        return overview(state, topic, committed_offsets, log_start, log_end)

    async def close(self) -> None:
        """Close the clients (the next :meth:`describe` opens new ones)."""
        clients, self._clients = self._clients, None
        if clients is not None:
            for client in clients:
                await stop_within(client, STOP_TIMEOUT_S)

    async def _started(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        async with self._starting:
            if self._clients is None:
                request_timeout_ms = int(self._timeout_s * 1000)
                connection = kafka_connection(self._settings)
                admin = AIOKafkaAdminClient(**connection, request_timeout_ms=request_timeout_ms)
                consumer = AIOKafkaConsumer(
                    **connection,
                    enable_auto_commit=False,
                    request_timeout_ms=request_timeout_ms,
                    isolation_level="read_committed",  # the end offsets the workers see
                )
                self._clients = (admin, consumer)  # closed by close() even if a start below fails
                await admin.start()
                await consumer.start()
            return self._clients


def overview(
    state: GroupState,
    topic: str,
    committed: Mapping[TopicPartition, int],
    log_start: Mapping[TopicPartition, int],
    log_end: Mapping[TopicPartition, int],
) -> GroupOverview:
    """The overview of what was read (apart from the I/O, so the arithmetic is plain)."""
    owners = {tp: member.member_id for member in state.members for tp in member.assignment}
    rows = []
    for tp in sorted(log_end):
        position = committed.get(tp)
        start, end = log_start[tp], log_end[tp]
        lag = max(0, end - (start if position is None else max(position, start)))
        rows.append(
            PartitionLag(
                partition=tp.partition,
                committed_offset=position,
                log_start_offset=start,
                log_end_offset=end,
                lag=lag,
                owner=owners.get(tp),
            )
        )
    members = [
        GroupMember(
            member_id=member.member_id,
            client_id=member.client_id,
            host=member.host.lstrip("/"),
            partitions=[tp.partition for tp in member.assignment if tp.topic == topic],
        )
        for member in state.members
    ]
    return GroupOverview(
        group=state.group,
        topic=topic,
        state=state.state,
        members=members,
        partitions=rows,
        total_lag=sum(row.lag for row in rows),
        read_at=dt.datetime.now(dt.UTC),
    )


async def log_range(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Log start and end offsets of ``partitions``, read by ``consumer`` (in no group)."""
    if not partitions:
        return {}, {}
    return await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)


async def topic_partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    """``topic``'s partitions in order; none if the topic does not exist (yet)."""
    [described] = await admin.describe_topics([topic])
    if described["error_code"] == _UNKNOWN_TOPIC_OR_PARTITION:
        return []
    if described["error_code"]:
        raise for_code(described["error_code"])(f"describing topic {topic}")
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])
