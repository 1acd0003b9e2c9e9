"""Move a consumer group's committed offsets, as exactly as ``kafka-consumer-groups --reset-offsets`` does.

Dry run unless --execute: prints per partition the committed offset, the new one, the log's start and end, how
many records will be delivered again and how many of those were already processed (workers skip those: their
event ids are in the processed-ids table; --reprocess clears exactly those marks after the offsets are
committed, so they run again). Targets follow Kafka's rules, clamped to the log. Refused while the group has
active members (Kafka's rule too): stop the workers first, or pass --wait-for-empty SECONDS.

Scope: --topic NAME[:P,P,...] (repeatable) or --all-topics (every partition the group has an offset for);
--from-file takes its partitions from the file.

Examples:
  image-replay reset --topic images --to-datetime 2026-11-27T09:00:00Z
  image-replay reset --topic images:0,1 --shift-by -100 --execute
  image-replay reset --topic images --to-earliest --export plan.csv   # review, then:
  image-replay reset --from-file plan.csv --execute --reprocess

Exit codes: 0 planned or applied, 1 refused or failed (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from core.clients import one_line
from core.consumer_group import GroupState
from core.processed import NoJobDatabase, forget_processed, processed_among, workers_database
from core.schema import SchemaMismatch
from core.settings import Settings
from schemas import EventDecodeError, decode_event
from scripts.replay.group_offsets import GroupOffsets
from scripts.replay.reset_plan import (
    PartitionPlan,
    PartitionState,
    ResetError,
    ResetSpec,
    SpecKind,
    epoch_ms,
    export_csv,
    parse_datetime,
    parse_duration,
    parse_reset_csv,
    parse_scope,
    plan_reset,
)

PROG = "image-replay reset"


class UsageError(Exception):
    """A combination of options argparse cannot express: exit code 2, like argparse's own errors."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``reset``'s options to ``parser`` and make :func:`run` its command."""
    spec = parser.add_argument_group("reset spec (exactly one)").add_mutually_exclusive_group(required=True)
    spec.add_argument("--to-earliest", action="store_true", help="the log start offset")
    spec.add_argument("--to-latest", action="store_true", help="the log end offset (skip everything unread)")
    spec.add_argument("--to-current", action="store_true", help="the committed offset (end offset if none)")
    spec.add_argument("--to-offset", type=int, metavar="N", help="offset N, clamped to the log")
    spec.add_argument("--shift-by", type=int, metavar="±N", help="committed offset + N, clamped to the log")
    spec.add_argument("--to-datetime", metavar="ISO", help="first record at/after this time, e.g. 2026-11-27T09:00Z")
    spec.add_argument("--by-duration", metavar="ISO", help="first record at/after now minus this, e.g. PT1H, P1DT2H")
    spec.add_argument("--from-file", type=Path, metavar="CSV", help="topic,partition,offset lines (see --export)")
    scope = parser.add_argument_group("scope (one, unless --from-file)").add_mutually_exclusive_group()
    scope.add_argument(
        "--topic",
        action="append",
        metavar="NAME[:P,P]",
        help="a topic, or some of its partitions (repeatable); no default: Kafka requires an explicit scope",
    )
    scope.add_argument("--all-topics", action="store_true", help="every partition the group has committed offsets for")
    parser.add_argument("--group", help="consumer group (default: settings CONSUMER_GROUP)")
    parser.add_argument("--execute", action="store_true", help="commit the new offsets (default: dry run)")
    parser.add_argument(
        "--reprocess",
        action="store_true",
        help="with --execute, also clear the processed marks of the replayed events so workers run them again",
    )
    parser.add_argument("--wait-for-empty", type=float, metavar="SECONDS", help="wait this long for workers to stop")
    parser.add_argument("--export", metavar="CSV", help="write the plan as topic,partition,offset lines ('-': stdout)")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="per Kafka step (default 30)")
    parser.set_defaults(run=run)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Plan (and with --execute apply) the reset; expected failures become one line on stderr and exit code 1."""
    try:
        return await _reset(settings, args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ResetError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(f"{PROG}: Kafka at {settings.kafka_bootstrap_servers} failed: {one_line(exc)}", file=sys.stderr)
        return 1
    except (NoJobDatabase, SchemaMismatch) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        print(f"{PROG}: {one_line(exc)}", file=sys.stderr)
        return 1


async def _reset(settings: Settings, args: argparse.Namespace) -> int:
    scoped = bool(args.topic or args.all_topics)
    if args.from_file is not None and scoped:
        raise UsageError("--from-file takes its partitions from the file: drop --topic/--all-topics")
    if args.from_file is None and not scoped:
        raise UsageError("name the partitions to reset: --topic NAME[:P,P] or --all-topics")
    spec = _spec(args)
    if args.reprocess and not args.execute:
        print(f"{PROG}: dry run: --reprocess takes effect only with --execute", file=sys.stderr)
    group = args.group or settings.consumer_group
    async with GroupOffsets(settings, group, timeout_s=args.timeout) as kafka:
        await _ensure_inactive(kafka, args.wait_for_empty)
        committed = await kafka.committed_offsets()
        partitions = await _partitions_in_scope(kafka, args, spec, committed)
        plans = plan_reset(spec, await _states(kafka, spec, partitions, committed))
        values = await kafka.read_values({plan.partition: plan.replay_range for plan in plans})
        plans = await _with_processed_counts(settings.database_url, plans, values)
        if args.export:
            _write_export(args.export, plans)
        if args.execute:
            await _ensure_inactive(kafka, None)  # the dry run's checks took time: members may have joined
            await kafka.commit({plan.partition: plan.target for plan in plans})
    forgotten = await _forget(settings.database_url, plans) if args.execute and args.reprocess else None
    _report(group, spec, plans, args, forgotten)
    return 0


def _spec(args: argparse.Namespace) -> ResetSpec:
    if args.to_earliest:
        return ResetSpec(SpecKind.EARLIEST)
    if args.to_latest:
        return ResetSpec(SpecKind.LATEST)
    if args.to_current:
        return ResetSpec(SpecKind.CURRENT)
    if args.to_offset is not None:
        return ResetSpec(SpecKind.OFFSET, offset=args.to_offset, text=str(args.to_offset))
    if args.shift_by is not None:
        return ResetSpec(SpecKind.SHIFT, offset=args.shift_by, text=f"{args.shift_by:+d}")
    if args.to_datetime is not None:
        return ResetSpec(
            SpecKind.DATETIME, timestamp_ms=epoch_ms(parse_datetime(args.to_datetime)), text=args.to_datetime
        )
    if args.by_duration is not None:
        since = dt.datetime.now(dt.UTC) - parse_duration(args.by_duration)
        return ResetSpec(SpecKind.DURATION, timestamp_ms=epoch_ms(since), text=args.by_duration)
    path: Path = args.from_file
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResetError(f"cannot read --from-file {path}: {exc}") from None
    return ResetSpec(SpecKind.FILE, file_offsets=parse_reset_csv(text, source=str(path)), text=str(path))


async def _ensure_inactive(kafka: GroupOffsets, wait_s: float | None) -> GroupState:
    def announce(group: GroupState) -> None:
        print(
            f"{PROG}: group {group.group} has {len(group.members)} active member(s); waiting up to {wait_s:g} s "
            "for it to be empty",
            file=sys.stderr,
            flush=True,
        )

    return await kafka.wait_until_inactive(wait_s or 0.0, on_wait=announce)


async def _partitions_in_scope(
    kafka: GroupOffsets, args: argparse.Namespace, spec: ResetSpec, committed: dict[TopicPartition, int]
) -> list[TopicPartition]:
    if spec.kind is SpecKind.FILE:
        partitions = sorted(spec.file_offsets)
    elif args.all_topics:
        partitions = sorted(committed)
        if not partitions:
            raise ResetError(f"group {kafka.group} has no committed offsets: --all-topics names no partition")
    else:
        scopes = [parse_scope(text) for text in args.topic]
        known = await kafka.topic_partitions(topic for topic, _ in scopes)
        partitions = sorted(
            {TopicPartition(topic, p) for topic, wanted in scopes for p in (known[topic] if wanted is None else wanted)}
        )
    await kafka.check_partitions_exist(partitions)
    return partitions


async def _states(
    kafka: GroupOffsets, spec: ResetSpec, partitions: list[TopicPartition], committed: dict[TopicPartition, int]
) -> list[PartitionState]:
    start, end = await kafka.log_range(partitions)
    by_time: dict[TopicPartition, int | None] = {}
    if spec.timestamp_ms is not None:
        by_time = await kafka.offsets_for_time(partitions, spec.timestamp_ms)
    return [PartitionState(tp, committed.get(tp), start[tp], end[tp], by_time.get(tp)) for tp in partitions]


async def _with_processed_counts(
    database_url: str, plans: list[PartitionPlan], values: dict[TopicPartition, list[bytes | None]]
) -> list[PartitionPlan]:
    """Count, per partition, the replayed records the workers will skip because their event is marked processed."""
    event_ids: dict[TopicPartition, list[str | None]] = {
        tp: [_event_id(value) for value in records] for tp, records in values.items()
    }
    every_id = {event_id for ids in event_ids.values() for event_id in ids if event_id is not None}
    processed: set[str] = set()
    if every_id:
        async with workers_database(database_url) as engine:
            processed = await processed_among(engine, every_id)
    counted = []
    for plan in plans:
        ids = event_ids.get(plan.partition, [])
        counted.append(
            dataclasses.replace(
                plan,
                already_processed=sum(1 for event_id in ids if event_id in processed),
                undecodable=sum(1 for event_id in ids if event_id is None),
                processed_event_ids=frozenset(event_id for event_id in ids if event_id in processed),
            )
        )
    return counted


def _event_id(value: bytes | None) -> str | None:
    try:
        return str(decode_event(value).event_id)
    except EventDecodeError:
        return None


async def _forget(database_url: str, plans: list[PartitionPlan]) -> int:
    """After the commit: clear the processed marks of the replayed events. Failing here is reported, not undone."""
    event_ids = {event_id for plan in plans for event_id in plan.processed_event_ids}
    if not event_ids:
        return 0
    try:
        async with workers_database(database_url) as engine:
            return await forget_processed(engine, event_ids)
    except (SQLAlchemyError, OSError, NoJobDatabase, SchemaMismatch) as exc:
        raise ResetError(
            f"offsets were reset, but clearing the processed marks of {len(event_ids)} replayed event(s) failed "
            f"({type(exc).__name__}: {exc}); workers will skip them as duplicates. No mark was deleted"
        ) from None


def _write_export(target: str, plans: list[PartitionPlan]) -> None:
    text = export_csv(plans)
    if target == "-":
        sys.stdout.write(text)
        return
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ResetError(f"cannot write --export {target}: {exc}") from None


def _report(
    group: str, spec: ResetSpec, plans: list[PartitionPlan], args: argparse.Namespace, forgotten: int | None
) -> None:
    if args.export == "-":
        return  # stdout holds the CSV
    document = plan_document(group, spec, plans, executed=args.execute, reprocess=args.reprocess, forgotten=forgotten)
    if args.json:
        print(json.dumps(document, indent=2))
        return
    print(render_table(document))


def plan_document(
    group: str,
    spec: ResetSpec,
    plans: list[PartitionPlan],
    *,
    executed: bool,
    reprocess: bool,
    forgotten: int | None = None,
) -> dict[str, Any]:
    """The plan as JSON-ready data: one object per partition, and totals."""
    rows = [
        {
            "topic": plan.partition.topic,
            "partition": plan.partition.partition,
            "committed": plan.state.committed,
            "target": plan.target,
            "log_start": plan.state.log_start,
            "log_end": plan.state.log_end,
            "redelivered": plan.redelivered,
            "skipped_over": plan.skipped_over,
            "already_processed": plan.already_processed,
            "undecodable": plan.undecodable,
        }
        for plan in plans
    ]
    totals = {key: sum(row[key] for row in rows) for key in ("redelivered", "skipped_over", "already_processed")}
    totals["undecodable"] = sum(row["undecodable"] for row in rows)
    return {
        "group": group,
        "spec": spec.describe(),
        "executed": executed,
        "reprocess": reprocess,
        "processed_marks_cleared": forgotten,
        "partitions": rows,
        "totals": totals,
    }


def render_table(document: dict[str, Any]) -> str:
    """The human-readable plan: a table per partition and what the workers will do."""
    header = ["TOPIC", "PARTITION", "COMMITTED", "NEW-OFFSET", "LOG-START", "LOG-END", "REPLAYED", "PROCESSED"]
    keys = ["topic", "partition", "committed", "target", "log_start", "log_end", "redelivered", "already_processed"]
    cells = [header] + [["-" if row[key] is None else str(row[key]) for key in keys] for row in document["partitions"]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells]
    mode = "applied" if document["executed"] else "dry run, add --execute to apply"
    totals = document["totals"]
    summary = [f"Group {document['group']}, {document['spec']} ({mode}):", *lines, ""]
    replayed, processed = totals["redelivered"], totals["already_processed"]
    if document["reprocess"] and document["executed"]:
        outcome = f"; their {document['processed_marks_cleared']} processed mark(s) were cleared, so they run again"
    elif document["reprocess"]:
        outcome = "; with --execute, --reprocess clears their marks so they run again"
    else:
        outcome = " and will be skipped" + (" (--reprocess runs them again)" if processed else "")
    summary.append(f"{replayed} record(s) will be delivered again; {processed} were processed{outcome}.")
    if totals["undecodable"]:
        summary.append(f"{totals['undecodable']} replayed record(s) hold no readable event (they go to the DLQ again).")
    if totals["skipped_over"]:
        summary.append(f"{totals['skipped_over']} record(s) not yet read will be skipped over and never delivered.")
    return "\n".join(summary)
