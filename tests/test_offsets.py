"""The committable offset never passes an unfinished record, whatever order records finish in."""

from __future__ import annotations

import random

from consumer.offsets import PartitionOffsets


def test_nothing_to_commit_before_any_record() -> None:
    assert PartitionOffsets().committable() is None


def test_in_order_completion_commits_one_past_the_last() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12):
        offsets.started(offset)
    assert offsets.committable() == 10
    offsets.finished(10)
    offsets.finished(11)
    assert offsets.committable() == 12
    offsets.finished(12)
    assert offsets.committable() == 13
    assert len(offsets) == 0


def test_out_of_order_completion_holds_at_the_first_unfinished() -> None:
    offsets = PartitionOffsets()
    for offset in range(5):
        offsets.started(offset)
    offsets.finished(3)
    offsets.finished(1)
    assert offsets.committable() == 0
    offsets.finished(0)
    assert offsets.committable() == 2
    assert len(offsets) == 2


def test_already_committed_offset_is_not_offered_again() -> None:
    offsets = PartitionOffsets()
    offsets.started(7)
    offsets.finished(7)
    offsets.committed = offsets.committable()
    assert offsets.committed == 8
    assert offsets.committable() is None


def test_random_orders_never_commit_past_pending() -> None:
    rng = random.Random(42)
    for _ in range(200):
        offsets = PartitionOffsets()
        started = list(range(rng.randint(1, 30)))
        for offset in started:
            offsets.started(offset)
        order = started[:]
        rng.shuffle(order)
        done: set[int] = set()
        for offset in order:
            offsets.finished(offset)
            done.add(offset)
            committable = offsets.committable()
            expected = min(set(started) - done, default=len(started))
            assert committable == expected


def test_a_position_past_transaction_markers_becomes_committable() -> None:
    offsets = PartitionOffsets()
    offsets.started(10)
    offsets.finished(10)
    assert offsets.committable() == 11
    offsets.passed(12)  # offset 11 is the marker that committed the transaction of record 10
    assert offsets.committable() == 12
    offsets.started(12)
    offsets.passed(13)
    assert offsets.committable() == 12, "a record still running holds the commit back"
