"""Failures of a job, classified by what the worker should do next.

The worker never matches on error messages: a :class:`TransientError` is retried with back-off, a
:class:`PermanentError` goes to the dead-letter topic at once. A :class:`DependencyUnavailable` is retried until
the dependency answers, without spending the record's attempts: an outage of the worker's own database or blob
store is no fault of the event, and dead-lettering every record for it would flood the DLQ. Anything else is a
bug, retried like a transient error (it may be a passing condition the code did not foresee) and dead-lettered
when the attempts run out.

Each class names its stable :class:`schemas.ErrorCode`, which dead letters carry and redrives filter by.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import ClassVar, Final, TypeVar

from core.database import is_transient_database_error
from schemas import ErrorCode

T = TypeVar("T")

MAX_ERROR_CHARS: Final = 500


class JobError(Exception):
    """Base of the job failures the worker knows how to handle."""

    code: ClassVar[ErrorCode] = ErrorCode.UNEXPECTED


class TransientError(JobError):
    """May succeed later (network error, timeout, HTTP 5xx/429, database busy): retry with back-off."""


class PermanentError(JobError):
    """Will fail the same way every time (bad event, bad image, HTTP 4xx, blocked URL): dead-letter now."""


class DependencyUnavailable(TransientError):
    """The worker's own database or blob store is failing, not the event: retry until it answers again."""


class UndecodableEvent(PermanentError):
    """The record is not an ``image_process`` event: not UTF-8 JSON, or not matching its schema."""

    code = ErrorCode.UNDECODABLE


class UnsupportedEvent(PermanentError):
    """A well-formed event of a type or version this worker does not know (e.g. from a newer producer)."""

    code = ErrorCode.UNSUPPORTED_VERSION


def error_code(error: BaseException) -> ErrorCode:
    """The stable code of ``error``; anything the worker did not classify is ``unexpected``."""
    return error.code if isinstance(error, JobError) else ErrorCode.UNEXPECTED


def describe(error: BaseException) -> str:
    """The error's message, or its class name when it has none."""
    return str(error) or type(error).__name__


def describe_error(error: BaseException) -> str:
    """``ErrorClass: message``, short enough for the job row and a DLQ header."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


async def database_call(operation: Awaitable[T]) -> T:
    """Await a database call, turning errors that may pass into :class:`DependencyUnavailable`: the record waits
    for the database without spending an attempt."""
    try:
        return await operation
    except Exception as exc:
        if is_transient_database_error(exc):
            raise DependencyUnavailable(f"database unavailable: {describe_error(exc)}") from exc
        raise
