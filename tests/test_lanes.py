"""Key lanes: one record per key at a time, in offset order, and a slot only for a record that runs."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord, TopicPartition

from consumer.lanes import KeyLanes
from consumer.partitions import OwnedPartition
from tests.support.events import make_record

PARTITION = TopicPartition("images", 2)


class Jobs:
    """A job function that runs until the test lets it finish, and remembers what ran alongside what."""

    def __init__(self) -> None:
        self.running: list[bytes] = []
        self.started: list[tuple[bytes, int]] = []
        self.most_at_once = 0
        self._finish: dict[int, asyncio.Event] = {}

    async def run(self, record: ConsumerRecord, owned: OwnedPartition) -> None:
        assert record.key not in self.running, "two records of one key at once"
        self.running.append(record.key)
        self.started.append((record.key, record.offset))
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await self._finish.setdefault(record.offset, asyncio.Event()).wait()
        finally:
            self.running.remove(record.key)

    def finish(self, offset: int) -> None:
        self._finish.setdefault(offset, asyncio.Event()).set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def admit(lanes: KeyLanes, owned: OwnedPartition, keys: str, first_offset: int = 0) -> None:
    for offset, key in enumerate(keys, start=first_offset):
        lanes.admit(PARTITION, owned, make_record(b"{}", key=key.encode(), offset=offset))


async def test_records_queued_behind_their_key_leave_the_slots_to_other_keys() -> None:
    jobs, owned = Jobs(), OwnedPartition()
    lanes = KeyLanes(jobs.run, concurrency=2)
    admit(lanes, owned, "aaab")  # offsets 0-2 are key a, 3 is key b
    await settle()
    assert sorted(jobs.running) == [b"a", b"b"], "b runs although a's later records were admitted before it"
    assert lanes.in_flight == 4
    for offset in range(4):
        jobs.finish(offset)
    await lanes.wait([PARTITION], timeout_s=5)
    assert [offset for key, offset in jobs.started if key == b"a"] == [0, 1, 2], "a's records in offset order"
    assert lanes.in_flight == 0
    assert owned.offsets.committable() == 4


async def test_no_more_records_run_than_there_are_slots() -> None:
    jobs, owned = Jobs(), OwnedPartition()
    lanes = KeyLanes(jobs.run, concurrency=3)
    admit(lanes, owned, "abcdefgh")
    await settle()
    assert len(jobs.running) == 3
    for offset in range(8):
        jobs.finish(offset)
    await lanes.wait([PARTITION], timeout_s=5)
    assert jobs.most_at_once == 3
    assert len(jobs.started) == 8


async def test_records_waiting_for_a_slot_are_left_when_their_partition_is_let_go() -> None:
    jobs, owned = Jobs(), OwnedPartition()
    lanes = KeyLanes(jobs.run, concurrency=1)
    admit(lanes, owned, "abc")
    await settle()
    assert jobs.running == [b"a"]
    owned.release()
    jobs.finish(0)
    await lanes.wait([PARTITION], timeout_s=5)
    assert [key for key, _ in jobs.started] == [b"a"], "b and c never started"
    assert owned.offsets.committable() == 1, "only a is committed; b and c stay for the next owner"
    assert lanes.in_flight == 0
    other = OwnedPartition()
    admit(lanes, other, "d", first_offset=3)  # reassigned later: read again from its commit, by the next owner
    await settle()
    assert jobs.running == [b"d"], "the slot went back: the next record runs"
    jobs.finish(3)
    await lanes.wait([PARTITION], timeout_s=5)
