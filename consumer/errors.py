"""Failures of a job, classified by what the worker should do next.

The worker never matches on error messages: a :class:`TransientError` is retried with back-off, a
:class:`PermanentError` goes to the dead-letter topic at once. A :class:`DependencyUnavailable` is retried until
the dependency answers, without spending the record's attempts: an outage of the worker's own database or blob
store is no fault of the event, and dead-lettering every record for it would flood the DLQ. Anything else is a
bug, retried like a transient error (it may be a passing condition the code did not foresee) and dead-lettered
when the attempts run out.
"""

from __future__ import annotations


class JobError(Exception):
    """Base of the job failures the worker knows how to handle."""


class TransientError(JobError):
    """May succeed later (network error, timeout, HTTP 5xx/429, database busy): retry with back-off."""


class PermanentError(JobError):
    """Will fail the same way every time (bad event, bad image, HTTP 4xx, blocked URL): dead-letter now."""


class DependencyUnavailable(TransientError):
    """The worker's own database or blob store is failing, not the event: retry until it answers again."""
