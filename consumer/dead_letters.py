"""Dead letters: a poison record, unchanged, on the DLQ topic with what is needed to debug and redrive it.

The key and value are copied byte for byte (a redrive re-publishes them as they were); the original headers
are kept, and ``dlq.*`` headers say where the record came from, how it failed and who gave up on it.
"""

from __future__ import annotations

import datetime as dt
import traceback
from dataclasses import dataclass

from aiokafka import ConsumerRecord

MAX_TRACEBACK_BYTES = 4096
MAX_MESSAGE_BYTES = 1024
HEADER_PREFIX = "dlq."


@dataclass(frozen=True, slots=True)
class Failure:
    """How a record failed: the last error and when the attempts happened."""

    error: BaseException
    attempts: int
    first_failure_at: dt.datetime
    last_failure_at: dt.datetime


def dead_letter_headers(
    record: ConsumerRecord, failure: Failure, *, worker_id: str, consumer_group: str
) -> list[tuple[str, bytes]]:
    """The original headers followed by the ``dlq.*`` ones."""
    error = failure.error
    trace = "".join(traceback.format_exception(error))
    described = {
        "original.topic": record.topic,
        "original.partition": str(record.partition),
        "original.offset": str(record.offset),
        "original.timestamp": str(record.timestamp),
        "error.class": f"{type(error).__module__}.{type(error).__qualname__}",
        "error.message": _bounded(str(error), MAX_MESSAGE_BYTES),
        "error.traceback": _bounded(trace, MAX_TRACEBACK_BYTES, keep_end=True),
        "attempts": str(failure.attempts),
        "first_failure_at": failure.first_failure_at.isoformat(),
        "last_failure_at": failure.last_failure_at.isoformat(),
        "worker_id": worker_id,
        "consumer_group": consumer_group,
    }
    original = [(key, value) for key, value in record.headers if not key.startswith(HEADER_PREFIX)]
    return original + [(HEADER_PREFIX + key, value.encode()) for key, value in described.items()]


def _bounded(text: str, limit_bytes: int, *, keep_end: bool = False) -> str:
    """``text`` cut to ``limit_bytes`` of UTF-8; a traceback keeps its end, where the error is."""
    encoded = text.encode()
    if len(encoded) <= limit_bytes:
        return text
    marker = "...[cut]..."
    room = limit_bytes - len(marker)
    if keep_end:
        return marker + encoded[-room:].decode(errors="ignore")
    return encoded[:room].decode(errors="ignore") + marker
