"""Kafka's reset rules and what they mean for our workers, without a broker."""

from __future__ import annotations

import datetime as dt

import pytest
from aiokafka.structs import TopicPartition

from scripts.replay.reset_plan import (
    PartitionPlan,
    PartitionState,
    ResetError,
    ResetSpec,
    SpecKind,
    clamp_to_log,
    epoch_ms,
    export_csv,
    parse_datetime,
    parse_duration,
    parse_reset_csv,
    parse_scope,
    plan_reset,
    target_offset,
)

TP = TopicPartition("images", 0)


def state(committed: int | None = 6, start: int = 2, end: int = 10, by_time: int | None = None) -> PartitionState:
    return PartitionState(TP, committed, start, end, by_time)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ResetSpec(SpecKind.EARLIEST), 2),
        (ResetSpec(SpecKind.LATEST), 10),
        (ResetSpec(SpecKind.CURRENT), 6),
        (ResetSpec(SpecKind.OFFSET, offset=4), 4),
        (ResetSpec(SpecKind.OFFSET, offset=0), 2),  # below the log start: the log start
        (ResetSpec(SpecKind.OFFSET, offset=99), 10),  # beyond the end: the end
        (ResetSpec(SpecKind.SHIFT, offset=-3), 3),
        (ResetSpec(SpecKind.SHIFT, offset=-30), 2),
        (ResetSpec(SpecKind.SHIFT, offset=30), 10),
        (ResetSpec(SpecKind.FILE, file_offsets={TP: 1}), 2),
        (ResetSpec(SpecKind.FILE, file_offsets={TP: 7}), 7),
    ],
)
def test_targets_follow_kafkas_rules(spec: ResetSpec, expected: int) -> None:
    assert target_offset(spec, state()) == expected


def test_time_based_specs_fall_back_to_the_end_offset_when_no_record_is_that_new() -> None:
    spec = ResetSpec(SpecKind.DATETIME, timestamp_ms=0)
    assert target_offset(spec, state(by_time=5)) == 5
    assert target_offset(spec, state(by_time=None)) == 10
    assert target_offset(ResetSpec(SpecKind.DURATION, timestamp_ms=0), state(by_time=None)) == 10


def test_to_current_keeps_the_committed_offset_unclamped_and_uses_the_end_without_one() -> None:
    assert target_offset(ResetSpec(SpecKind.CURRENT), state(committed=1)) == 1  # below the log start: kept
    assert target_offset(ResetSpec(SpecKind.CURRENT), state(committed=None)) == 10


def test_shift_by_without_a_committed_offset_is_refused() -> None:
    with pytest.raises(ResetError, match="no committed offset"):
        target_offset(ResetSpec(SpecKind.SHIFT, offset=-1), state(committed=None))


def test_clamp_is_inclusive_of_both_ends() -> None:
    assert [clamp_to_log(offset, state()) for offset in (1, 2, 10, 11)] == [2, 2, 10, 10]


def test_replay_counts_from_the_position_workers_read_from() -> None:
    back = PartitionPlan(state(committed=6), target=3)
    assert (back.replay_range, back.redelivered, back.skipped_over) == ((3, 6), 3, 0)
    forward = PartitionPlan(state(committed=6), target=9)
    assert (forward.redelivered, forward.skipped_over) == (0, 3)
    # No committed offset, or one outside the log: workers start at the log start (auto_offset_reset=earliest).
    assert PartitionPlan(state(committed=None), target=2).redelivered == 0
    assert PartitionPlan(state(committed=None), target=5).skipped_over == 3
    assert PartitionPlan(state(committed=1), target=4).skipped_over == 2
    assert PartitionPlan(state(committed=6), target=0).replay_range == (2, 6)


def test_plan_is_sorted_by_topic_and_partition() -> None:
    states = [PartitionState(TopicPartition(t, p), 1, 0, 3) for t, p in [("b", 0), ("a", 2), ("a", 0)]]
    plans = plan_reset(ResetSpec(SpecKind.EARLIEST), states)
    assert [(plan.partition.topic, plan.partition.partition) for plan in plans] == [("a", 0), ("a", 2), ("b", 0)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1H", dt.timedelta(hours=1)),
        ("pt30m", dt.timedelta(minutes=30)),
        ("P1DT2H3M4.5S", dt.timedelta(days=1, hours=2, minutes=3, seconds=4.5)),
        ("P2D", dt.timedelta(days=2)),
        ("-PT10M", dt.timedelta(minutes=-10)),
        ("PT-6H3M", dt.timedelta(hours=-6, minutes=3)),
        ("PT-0.5S", dt.timedelta(seconds=-0.5)),
    ],
)
def test_durations_read_like_java_duration_parse(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["1h", "P", "PT", "P1H", "PT1D", "", "P1Y"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ResetError, match="ISO-8601 duration"):
        parse_duration(text)


def test_datetimes_need_a_zone() -> None:
    assert epoch_ms(parse_datetime("1970-01-01T00:00:01.5Z")) == 1500
    assert epoch_ms(parse_datetime("1970-01-01T01:00:00+01:00")) == 0
    with pytest.raises(ResetError, match="no zone"):
        parse_datetime("2026-01-01T00:00:00")
    with pytest.raises(ResetError, match="not an ISO-8601 date-time"):
        parse_datetime("yesterday")


def test_scopes_read_like_kafkas_topic_option() -> None:
    assert parse_scope("images") == ("images", None)
    assert parse_scope("images:0,2") == ("images", [0, 2])
    for bad in ("images:", "images:x", "a:1:2", ":1"):
        with pytest.raises(ResetError):
            parse_scope(bad)


def test_csv_round_trips_in_kafkas_export_format() -> None:
    plans = [PartitionPlan(state(), 4), PartitionPlan(PartitionState(TopicPartition("images", 1), 3, 0, 9), 0)]
    text = export_csv(plans)
    assert text == "images,0,4\nimages,1,0\n"
    assert parse_reset_csv(text) == {TopicPartition("images", 0): 4, TopicPartition("images", 1): 0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images,0\n", "line 1: expected topic,partition,offset, got 2 fields"),
        ("images,0,1\nimages,x,1\n", "line 2"),
        ("images,0,1\nimages,0,2\n", "appears twice"),
        ("\n\n", "no topic,partition,offset line"),
    ],
)
def test_bad_csv_names_the_line(text: str, message: str) -> None:
    with pytest.raises(ResetError, match=message):
        parse_reset_csv(text)
