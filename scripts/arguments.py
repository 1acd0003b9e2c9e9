"""Argument types the command-line tools share (standard library only: the Kafka launcher needs nothing else)."""

from __future__ import annotations

import argparse
import datetime as dt


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An ``argparse`` type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


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


def aware_datetime(text: str) -> dt.datetime:
    """An ``argparse`` type for :func:`parse_aware_datetime`."""
    try:
        return parse_aware_datetime(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
