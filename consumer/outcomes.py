"""How a record finished: the one vocabulary of the handler, the engine, the metrics and the logs."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """A finished record's fate; with each of them the record's offset may be committed."""

    DONE = "done"
    SKIPPED_DUPLICATE = "skipped_duplicate"
    """The event id was already processed (a redelivery, a replay, a concurrent duplicate): nothing was redone."""
    SKIPPED_CANCELLED = "skipped_cancelled"
    """The job was cancelled while queued (``DELETE /images/{id}``): nothing was fetched, read or recorded."""
    SKIPPED_EXPIRED = "skipped_expired"
    """The job is past its retention (its files or its row expired): nothing was fetched, read or recorded."""
    DEAD_LETTERED = "dead_lettered"
    """The record is on the DLQ topic, acked; its job is marked failed."""
