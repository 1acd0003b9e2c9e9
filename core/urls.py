"""How a user-supplied URL is shown (logs, errors, dead-letter headers, the status resource): never with secrets.

Users put credentials in URLs (``https://user:secret@host/...``, ``?token=...``). Those parts are dropped or
masked wherever a URL is shown; only the event itself, which the worker needs to fetch the image, keeps them.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

MASK: Final = "***"


def redact_url(url: str) -> str:
    """``url`` without user info and with every query value masked (the names stay: they help debugging)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}={MASK}" if value or "=" in pair else name
        for pair in parts.query.split("&")
        if pair
        for name, _, value in [pair.partition("=")]
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query, fragment=""))
