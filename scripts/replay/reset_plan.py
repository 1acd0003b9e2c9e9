"""Planning a consumer-group offset reset: given the log and the group's offsets, where each partition goes.

Pure: no I/O, so the rules can be unit-tested. They are Apache Kafka's own (``kafka-consumer-groups
--reset-offsets``, ``GroupOffsetsResetter`` in 4.1), checked against the real tool by the integration tests:

- ``--to-offset``, ``--shift-by`` and ``--from-file`` are clamped to the log: above the end offset becomes the end
  offset, below the log start offset becomes the log start offset.
- ``--shift-by`` starts from the committed offset; a partition without one is an error (Kafka refuses the
  whole reset: "Cannot shift offset for partition ... since there is no current committed offset").
- ``--to-current`` keeps the committed offset as it is (not clamped); without one it takes the end offset.
- ``--to-datetime``/``--by-duration`` take the first offset whose timestamp is at or after the time, or the end
  offset when no record is that new. ``--to-earliest``/``--to-latest`` are the log start/end offsets.

What a reset means for our workers is computed here too: a worker reads from the committed offset, or, when
there is none or it lies outside the log, from the log start (``auto_offset_reset="earliest"``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from aiokafka.structs import TopicPartition

from core.times import parse_aware_datetime


class ResetError(Exception):
    """An expected refusal (bad spec, unknown topic, active group, ...): shown as one line, exit code 1."""


class SpecKind(StrEnum):
    """The reset scenarios, named after their options (as in Kafka's tool)."""

    EARLIEST = "to-earliest"
    LATEST = "to-latest"
    CURRENT = "to-current"
    OFFSET = "to-offset"
    SHIFT = "shift-by"
    DATETIME = "to-datetime"
    DURATION = "by-duration"
    FILE = "from-file"


@dataclass(frozen=True, slots=True)
class ResetSpec:
    """One reset scenario with its argument: ``offset`` for to-offset/shift-by, ``timestamp_ms`` for the
    time-based ones (already resolved: by-duration is "now minus the duration"), ``file_offsets`` for from-file."""

    kind: SpecKind
    offset: int | None = None
    timestamp_ms: int | None = None
    file_offsets: Mapping[TopicPartition, int] = field(default_factory=dict)
    text: str = ""

    def describe(self) -> str:
        return f"--{self.kind.value}" + (f" {self.text}" if self.text else "")


@dataclass(frozen=True, slots=True)
class PartitionState:
    """What the broker says about one partition: the group's committed offset (None: none) and the log's range.

    ``offset_for_time`` is the answer to ``offsets_for_times`` for time-based specs (None: no record that new).
    """

    partition: TopicPartition
    committed: int | None
    log_start: int
    log_end: int
    offset_for_time: int | None = None

    def read_position(self, offset: int | None) -> int:
        """Where a worker starts reading if the group's offset is ``offset``: out of the log means the start."""
        if offset is None or not self.log_start <= offset <= self.log_end:
            return self.log_start
        return offset


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """One partition's reset, and what the workers will see because of it.

    ``already_processed`` and ``undecodable`` count the records of the replay range whose event id is in the
    processed-ids table, and those without a readable event id; ``processed_event_ids`` are those ids (what
    ``--reprocess`` forgets).
    """

    state: PartitionState
    target: int
    already_processed: int = 0
    undecodable: int = 0
    processed_event_ids: frozenset[str] = frozenset()

    @property
    def partition(self) -> TopicPartition:
        return self.state.partition

    @property
    def replay_range(self) -> tuple[int, int]:
        """Offsets ``[first, stop)`` that workers will read a second time (empty when first >= stop)."""
        return self.state.read_position(self.target), self.state.read_position(self.state.committed)

    @property
    def redelivered(self) -> int:
        first, stop = self.replay_range
        return max(0, stop - first)

    @property
    def skipped_over(self) -> int:
        """Records the group moves past without ever delivering them (a reset forwards)."""
        first, stop = self.replay_range
        return max(0, first - stop)


def clamp_to_log(offset: int, state: PartitionState) -> int:
    """Kafka's ``checkOffsetsRange``: above the end offset → end, below the log start → log start."""
    if offset > state.log_end:
        return state.log_end
    if offset < state.log_start:
        return state.log_start
    return offset


def target_offset(spec: ResetSpec, state: PartitionState) -> int:
    """The new committed offset of one partition under ``spec``, exactly as Kafka's tool computes it."""
    match spec.kind:
        case SpecKind.EARLIEST:
            return state.log_start
        case SpecKind.LATEST:
            return state.log_end
        case SpecKind.CURRENT:
            return state.committed if state.committed is not None else state.log_end
        case SpecKind.OFFSET:
            assert spec.offset is not None, "--to-offset carries its offset"
            return clamp_to_log(spec.offset, state)
        case SpecKind.SHIFT:
            assert spec.offset is not None, "--shift-by carries its shift"
            if state.committed is None:
                raise ResetError(
                    f"cannot shift partition {_name(state.partition)}: the group has no committed offset there "
                    "(as in Kafka's tool); pick partitions with --topic NAME:P,P or use another spec"
                )
            return clamp_to_log(state.committed + spec.offset, state)
        case SpecKind.DATETIME | SpecKind.DURATION:
            return state.offset_for_time if state.offset_for_time is not None else state.log_end
        case SpecKind.FILE:
            return clamp_to_log(spec.file_offsets[state.partition], state)
    raise AssertionError(f"unhandled spec {spec.kind}")


def plan_reset(spec: ResetSpec, states: Iterable[PartitionState]) -> list[PartitionPlan]:
    """The plan for every partition, in topic/partition order."""
    ordered = sorted(states, key=lambda state: state.partition)
    return [PartitionPlan(state, target_offset(spec, state)) for state in ordered]


# ISO-8601 durations as java.time.Duration.parse reads them (what Kafka's --by-duration uses): days and time
# parts only, each part optionally signed, seconds with up to nine decimals.
_DURATION = re.compile(
    r"([-+]?)P(?:([-+]?\d+)D)?(?:T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+)(?:[.,](\d{0,9}))?S)?)?",
    re.IGNORECASE,
)


def parse_duration(text: str) -> dt.timedelta:
    """``PT1H``, ``P1DT2H30M``, ``PT0.5S``, ``-PT10M`` → a timedelta; ResetError when it is not one."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or text.strip().upper().endswith("T") or text.strip().upper().lstrip("+-") == "P":
        raise ResetError(f"--by-duration {text!r} is not an ISO-8601 duration such as PT1H, PT30M or P1DT12H")
    sign, days, hours, minutes, seconds, fraction = match.groups()
    seconds_int = int(seconds or 0)
    nanos = int((fraction or "").ljust(9, "0") or 0)
    if seconds_int < 0 or (seconds or "").startswith("-"):
        nanos = -nanos
    total = dt.timedelta(
        days=int(days or 0),
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=seconds_int,
        microseconds=nanos / 1000,
    )
    return -total if sign == "-" else total


def parse_datetime(text: str) -> dt.datetime:
    """``--to-datetime``: an ISO-8601 date-time with a zone; ResetError otherwise."""
    try:
        return parse_aware_datetime(text)
    except ValueError as exc:
        raise ResetError(f"--to-datetime {exc}") from None


def epoch_ms(moment: dt.datetime) -> int:
    """Milliseconds since the epoch, truncated like Java's ``Instant.toEpochMilli``."""
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def parse_scope(text: str) -> tuple[str, list[int] | None]:
    """``--topic NAME`` (every partition) or ``NAME:P,P`` (those partitions), as Kafka's tool reads it."""
    if ":" not in text:
        if not text:
            raise ResetError("--topic needs a topic name")
        return text, None
    parts = text.split(":")
    if len(parts) != 2 or not parts[0]:
        raise ResetError(f"invalid --topic {text!r}: expected NAME or NAME:PARTITION,PARTITION")
    partitions = []
    for item in parts[1].split(","):
        if not item.strip().isdigit():
            raise ResetError(f"invalid partition {item!r} in --topic {text!r}")
        partitions.append(int(item))
    return parts[0], partitions


def parse_reset_csv(text: str, *, source: str = "the file") -> dict[TopicPartition, int]:
    """Read ``topic,partition,offset`` lines (Kafka's single-group ``--export`` format, no header)."""
    offsets: dict[TopicPartition, int] = {}
    for line_number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 3:
            raise ResetError(f"{source}, line {line_number}: expected topic,partition,offset, got {len(row)} fields")
        topic, partition, offset = (cell.strip() for cell in row)
        if not topic or not partition.isdigit() or not offset.lstrip("-").isdigit():
            raise ResetError(f"{source}, line {line_number}: expected topic,partition,offset, got {','.join(row)!r}")
        key = TopicPartition(topic, int(partition))
        if key in offsets:
            raise ResetError(f"{source}, line {line_number}: partition {_name(key)} appears twice")
        offsets[key] = int(offset)
    if not offsets:
        raise ResetError(f"{source} holds no topic,partition,offset line")
    return offsets


def export_csv(plans: Iterable[PartitionPlan]) -> str:
    """The plan as ``topic,partition,offset`` lines: what Kafka's ``--export`` writes and ``--from-file`` reads."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for plan in plans:
        writer.writerow([plan.partition.topic, plan.partition.partition, plan.target])
    return buffer.getvalue()


def _name(partition: TopicPartition) -> str:
    return f"{partition.topic}-{partition.partition}"
