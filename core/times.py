"""Moments given as text by operators and in headers: ISO-8601 with a zone, never the machine's local time."""

from __future__ import annotations

import datetime as dt


def parse_aware_datetime(text: str) -> dt.datetime:
    """An ISO-8601 date-time with a zone (``2026-11-27T10:00:00Z``, ``...+01:00``).

    Raises ValueError saying what is wrong: a time without a zone would silently mean the machine's local time.
    """
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 date-time, e.g. 2026-11-27T10:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no zone: give a time zone such as Z or +01:00")
    return moment
