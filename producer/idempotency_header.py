"""The ``Idempotency-Key`` request header: read and checked by the route, documented from the same rules.

Read from the request directly rather than declared as a FastAPI ``Header`` parameter: parameter solving was a
tenth of ``POST /images``'s CPU. A bad key is a 422 in FastAPI's usual shape, located at the header.
"""

from __future__ import annotations

import re
from typing import Any, Final

from fastapi import Request
from fastapi.exceptions import RequestValidationError

HEADER: Final = "idempotency-key"
MAX_LENGTH: Final = 255
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]+")

PARAMETER: Final[dict[str, Any]] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes retries safe: the same key returns the same job and never creates a second one.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH, "pattern": r"^[\x20-\x7e]+$"},
}


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, None without one; 422 unless it is 1 to 255 printable ASCII characters."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_LENGTH:
        _reject("string_too_long" if key else "string_too_short", f"must be 1 to {MAX_LENGTH} characters long")
    if _PRINTABLE_ASCII.fullmatch(key) is None:
        _reject("string_pattern_mismatch", "must be printable ASCII")
    return key


def _reject(error_type: str, message: str) -> None:
    raise RequestValidationError([{"type": error_type, "loc": ("header", HEADER), "msg": f"Idempotency-Key {message}"}])
