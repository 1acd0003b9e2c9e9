"""Argument types the command-line tools share (standard library only: the Kafka launcher needs nothing else)."""

from __future__ import annotations

import argparse
import datetime as dt

from core.times import parse_aware_datetime  # standard library only, like this module


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


def aware_datetime(text: str) -> dt.datetime:
    """An ``argparse`` type for :func:`parse_aware_datetime`."""
    try:
        return parse_aware_datetime(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
