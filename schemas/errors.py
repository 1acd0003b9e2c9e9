"""Stable codes for why a record was dead-lettered: what operators count, alert on and redrive by.

A code names a cause, not a Python class, so it survives refactoring. Dead letters written before codes existed
carry only ``dlq.error.class``; :func:`dead_letter_error_code` maps those to the code they would have today.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from schemas.headers import DeadLetterHeader, Headers, last_header


class ErrorCode(StrEnum):
    """Why a record could not be processed."""

    UNDECODABLE = "undecodable"
    """The record is not an event: not UTF-8 JSON, or not matching its schema."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """A well-formed event of a type or version this worker does not know."""
    INVALID_URL = "invalid_url"
    BLOCKED_URL = "blocked_url"
    """The URL names or resolves to a non-public address."""
    TOO_MANY_REDIRECTS = "too_many_redirects"
    DOWNLOAD_TOO_LARGE = "download_too_large"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    DOWNLOAD_TIMEOUT = "download_timeout"
    NETWORK_ERROR = "network_error"
    UNSUPPORTED_IMAGE = "unsupported_image"
    """A format outside the allow-list, or more pixels than the decoder accepts."""
    CORRUPT_IMAGE = "corrupt_image"
    """An allowed format whose bytes do not decode."""
    MISSING_UPLOAD = "missing_upload"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    TAMPERED = "tampered"
    """The event names files that are not its own image's (another job's upload or result)."""
    UNEXPECTED = "unexpected"
    """An error the worker does not know: a bug, or a condition nobody foresaw."""
    UNKNOWN = "unknown"
    """A dead letter with neither a code nor a class header (not written by a worker)."""


# The classes dead letters named before dlq.error.code existed, by their last dotted part.
_LEGACY_CLASSES: Final = {
    "InvalidUrl": ErrorCode.INVALID_URL,
    "BlockedUrl": ErrorCode.BLOCKED_URL,
    "TooManyRedirects": ErrorCode.TOO_MANY_REDIRECTS,
    "DownloadTooLarge": ErrorCode.DOWNLOAD_TOO_LARGE,
    "HttpClientError": ErrorCode.HTTP_4XX,
    "HttpServerError": ErrorCode.HTTP_5XX,
    "FetchTimeout": ErrorCode.DOWNLOAD_TIMEOUT,
    "FetchNetworkError": ErrorCode.NETWORK_ERROR,
}
# Older workers raised a bare PermanentError for these causes; its message began with one of these.
_LEGACY_PERMANENT_MESSAGES: Final = (
    ("undecodable record: unknown event type/version", ErrorCode.UNSUPPORTED_VERSION),
    ("undecodable record", ErrorCode.UNDECODABLE),
    ("cannot use the image", ErrorCode.UNSUPPORTED_IMAGE),
    ("cannot decode the image", ErrorCode.CORRUPT_IMAGE),
)


def dead_letter_error_code(headers: Headers) -> str:
    """The dead letter's code: ``dlq.error.code`` as written (a newer worker may know more codes), else derived
    from the ``dlq.error.class`` older workers wrote."""
    headers = list(headers)
    code = last_header(headers, DeadLetterHeader.ERROR_CODE)
    if code is not None:
        return code.decode(errors="replace")
    error_class = last_header(headers, DeadLetterHeader.ERROR_CLASS)
    if error_class is None:
        return ErrorCode.UNKNOWN
    name = error_class.decode(errors="replace").rsplit(".", 1)[-1]
    if name in _LEGACY_CLASSES:
        return _LEGACY_CLASSES[name]
    if name == "PermanentError":
        message = (last_header(headers, DeadLetterHeader.ERROR_MESSAGE) or b"").decode(errors="replace")
        if message.endswith("is missing from the blob store"):
            return ErrorCode.MISSING_UPLOAD
        if "does not match its checksum" in message:
            return ErrorCode.CHECKSUM_MISMATCH
        for prefix, legacy_code in _LEGACY_PERMANENT_MESSAGES:
            if message.startswith(prefix):
                return legacy_code
    return ErrorCode.UNEXPECTED
