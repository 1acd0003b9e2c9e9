"""Every record header name on the pipeline's topics: the wire vocabulary producers, workers and tools share.

A header outlives the code that wrote it (dead letters wait on their topic for weeks), so the names are fixed
here and never derived from Python names; readers accept every name a released version wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final

Headers = Iterable[tuple[str, bytes]]
# aiokafka's record builder takes only exact str header names: pass ``.value`` of these enums to it.


class EventHeader(StrEnum):
    """Headers of an ``image_process`` event: tools can route or filter without parsing the value."""

    CONTENT_TYPE = "content-type"
    EVENT_TYPE = "event-type"
    EVENT_VERSION = "event-version"


class TraceHeader(StrEnum):
    """The W3C trace context of the span that appended the record: a worker's span continues that trace."""

    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"


DEAD_LETTER_PREFIX: Final = "dlq."


class DeadLetterHeader(StrEnum):
    """Headers a worker adds to a dead letter: where the record came from, how it failed, who gave up on it."""

    ORIGINAL_TOPIC = "dlq.original.topic"
    ORIGINAL_PARTITION = "dlq.original.partition"
    ORIGINAL_OFFSET = "dlq.original.offset"
    ORIGINAL_TIMESTAMP = "dlq.original.timestamp"
    ERROR_CODE = "dlq.error.code"
    """A stable :class:`schemas.errors.ErrorCode`: what to filter and count by."""
    ERROR_CLASS = "dlq.error.class"
    """The Python class that was raised, for debugging only: it moves when the code does."""
    ERROR_MESSAGE = "dlq.error.message"
    ERROR_TRACEBACK = "dlq.error.traceback"
    ATTEMPTS = "dlq.attempts"
    FIRST_FAILURE_AT = "dlq.first_failure_at"
    LAST_FAILURE_AT = "dlq.last_failure_at"
    WORKER_ID = "dlq.worker_id"
    CONSUMER_GROUP = "dlq.consumer_group"


REDRIVE_PREFIX: Final = "redrive."


class RedriveHeader(StrEnum):
    """Headers of a dead letter's copy re-published by ``image-replay redrive``: where it came from."""

    COUNT = "redrive.count"
    GROUP = "redrive.group"
    DLQ_TOPIC = "redrive.dlq.topic"
    DLQ_PARTITION = "redrive.dlq.partition"
    DLQ_OFFSET = "redrive.dlq.offset"
    AT = "redrive.at"


def last_header(headers: Headers, name: str) -> bytes | None:
    """The last value of header ``name``: a dead letter keeps the original headers, so later ones win."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found
