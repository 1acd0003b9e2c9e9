"""Re-publish dead letters from the DLQ topic to the main topic, with their original key and value.

Dry run by default: prints, by error code, how many dead letters would be redriven, are over the redrive cap,
are filtered out or were already redriven. --execute re-publishes them.

Each dead letter is redriven at most once per progress group (--group, default <CONSUMER_GROUP>.redrive), also
across interrupted runs. The group's committed offset on each DLQ partition is the first dead letter not yet
redriven; it moves only over a contiguous run of redriven ones. Dead letters that do not match the filters, or
are over the cap, are NOT consumed: a later redrive with other filters (or a higher --max-redrives) still finds
them. Dead letters past the committed offset that were redriven already are recognised by the redrive.* headers
of their copies on the main topic and skipped.

Copies keep the original non-dlq.* headers and carry redrive.count (incremented when the dead letter came from
an earlier redrive), redrive.group, redrive.dlq.topic, redrive.dlq.partition, redrive.dlq.offset, redrive.at.
Run one redrive per group at a time (the admin API's POST /admin/dead-letters/redrive runs the same code, see
core/redrive.py). Exit codes: 0 done, 1 failed (one line on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from aiokafka.errors import KafkaError

from core.clients import one_line
from core.redrive import RedriveOptions, Report, Verdict, redrive
from core.settings import Settings
from core.topics import TopicMissing
from schemas import ErrorCode
from scripts.arguments import aware_datetime, positive_int

PLAIN_PROGRESS_EVERY_S = 5.0


class Progress:
    """One ``\\r``-rewritten line on a terminal, a plain line every few seconds otherwise; on stderr."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self._total = total
        self._stream = stream
        self._tty = stream.isatty()
        self._last_line_s = time.monotonic()

    def update(self, examined: int, redriven: int) -> None:
        line = f"examined {examined}/{self._total} dead letters, redriven {redriven}"
        if self._tty:
            print(f"\r{line}", end="", file=self._stream, flush=True)
        elif time.monotonic() - self._last_line_s >= PLAIN_PROGRESS_EVERY_S:
            print(line, file=self._stream, flush=True)
            self._last_line_s = time.monotonic()

    def close(self) -> None:
        if self._tty:
            print(file=self._stream, flush=True)


def report_table(report: Report) -> str:
    """The report as the table an operator reads: one row per error code, one column per verdict."""
    first = "WOULD REDRIVE" if report.dry_run else "REDRIVEN"
    titles = ["ERROR CODE", first, "OVER REDRIVE CAP", "FILTERED OUT", "ALREADY REDRIVEN"]
    rows = [[name, *(str(counts[v]) for v in Verdict)] for name, counts in sorted(report.by_error_code.items())]
    rows.append(["TOTAL", *(str(report.total(v)) for v in Verdict)])
    widths = [max(len(row[i]) for row in [titles, *rows]) for i in range(len(titles))]
    lines = [
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in [titles, *rows]
    ]
    if report.dry_run:
        lines.append(f"dry run: nothing re-published, progress group {report.group} not moved; --execute to redrive")
    else:
        lines.append(f"progress group {report.group} at {dict(sorted(report.committed.items()))}")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the redrive options to ``parser`` and register :func:`run`."""
    parser.add_argument("--execute", action="store_true", help="re-publish (default: dry run, only count)")
    parser.add_argument(
        "--error-code",
        action="append",
        default=[],
        metavar="CODE",
        help="only dead letters with this stable error code (dlq.error.code; derived from dlq.error.class for "
        f"older ones): {', '.join(ErrorCode)}; repeat for several",
    )
    parser.add_argument(
        "--error-class",
        action="append",
        default=[],
        metavar="CLASS",
        help="only dead letters whose dlq.error.class is CLASS, full (consumer.download.HttpClientError) or short "
        "(HttpClientError); repeat for several. Prefer --error-code: classes move with the code",
    )
    parser.add_argument(
        "--image-id", action="append", default=[], metavar="UUID", help="only this image (the record key); repeatable"
    )
    parser.add_argument(
        "--since",
        type=aware_datetime,
        metavar="TIME",
        help="only dead letters that last failed at or after this ISO-8601 time with zone (dlq.last_failure_at; "
        "the DLQ record's timestamp when that header is missing)",
    )
    parser.add_argument(
        "--until", type=aware_datetime, metavar="TIME", help="only dead letters that last failed before this time"
    )
    parser.add_argument("--limit", type=positive_int, metavar="N", help="redrive at most N dead letters, then stop")
    parser.add_argument(
        "--max-redrives",
        type=positive_int,
        default=3,
        metavar="N",
        help="dead letters whose redrive.count reached N are not redriven again: reported as over the redrive cap "
        "(default 3)",
    )
    parser.add_argument("--group", help="progress group on the DLQ (default: CONSUMER_GROUP + '.redrive')")
    parser.add_argument(
        "--batch-size", type=positive_int, default=500, metavar="N", help="dead letters per acked-then-committed batch"
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON instead of a table")
    parser.set_defaults(run=run)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """The ``image-replay redrive`` command: 0 done, 1 failed with a one-line message."""
    options = RedriveOptions(
        execute=args.execute,
        error_codes=tuple(args.error_code),
        error_classes=tuple(args.error_class),
        image_ids=tuple(args.image_id),
        since=args.since,
        until=args.until,
        limit=args.limit,
        max_redrives=args.max_redrives,
        group=args.group,
        batch_size=args.batch_size,
    )
    try:
        report = await redrive(settings, options, progress=Progress)
    except (KafkaError, TopicMissing, TimeoutError, OSError) as exc:
        print(f"image-replay redrive: {one_line(exc)}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=2) if args.json else report_table(report))
    return 0
