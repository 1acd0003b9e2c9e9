"""Which job a log line is about, as fields of its own: set once around each record's handling, not per call site.

The worker binds a :class:`JobFields` around the handling of each record (:func:`about`); :class:`JobFieldsFilter`,
installed by :func:`core.logs.configure_logging`, copies it onto every line logged meanwhile from that task, so
``LOG_FORMAT=json`` lines carry ``job_id``, ``event_id``, ``topic``, ``partition``, ``offset`` and ``key`` that a
log search can match exactly. The text format shows none of them: its job lines spell the record out in the
message already (:func:`consumer.records.coordinates`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from contextvars import ContextVar


@dataclasses.dataclass(frozen=True, slots=True)
class JobFields:
    """The record a job line is about, and the job and event it carries once decoded."""

    topic: str
    partition: int
    offset: int
    key: str | None
    job_id: str | None  # the image id: the record's key until the event is decoded
    event_id: str | None = None  # known once the event is decoded
    # The hook for tracing: whoever starts a span for the record sets it here, and every line of the job shows it.
    trace_id: str | None = None


_current: ContextVar[JobFields | None] = ContextVar("log_job_fields", default=None)


@contextlib.contextmanager
def about(fields: JobFields) -> Iterator[None]:
    """Lines logged by this task inside the block carry ``fields``; a contextvar, so concurrent jobs keep theirs."""
    token = _current.set(fields)
    try:
        yield
    finally:
        _current.reset(token)


def name_event(*, event_id: str, job_id: str) -> None:
    """The event is decoded: the current job's lines from here on name it (no-op outside :func:`about`)."""
    fields = _current.get()
    if fields is not None:
        _current.set(dataclasses.replace(fields, event_id=event_id, job_id=job_id))


def name_trace(trace_id: str) -> None:
    """A span was started for the current job: its lines from here on name the trace (no-op outside :func:`about`)."""
    fields = _current.get()
    if fields is not None:
        _current.set(dataclasses.replace(fields, trace_id=trace_id))


class JobFieldsFilter(logging.Filter):
    """Adds the current :class:`JobFields` to each record as attributes (a formatter's extra fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _current.get()
        if fields is not None:
            record.__dict__.update(dataclasses.asdict(fields))
        return True
