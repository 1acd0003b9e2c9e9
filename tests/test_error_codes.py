"""Stable error codes: what a dead letter says about its cause, for letters written before and after codes."""

from __future__ import annotations

import pytest

from consumer.download import BlockedUrl, DownloadTimeout, HttpClientError
from consumer.errors import DependencyUnavailable, UndecodableEvent, error_code
from consumer.render import CorruptImage, UnusableImage
from schemas import DeadLetterHeader, ErrorCode, dead_letter_error_code

PERMANENT = b"consumer.errors.PermanentError"


def test_each_failure_class_names_its_code() -> None:
    assert error_code(HttpClientError("404")) is ErrorCode.HTTP_4XX
    assert error_code(BlockedUrl("10.0.0.1")) is ErrorCode.BLOCKED_URL
    assert error_code(DownloadTimeout("slow")) is ErrorCode.DOWNLOAD_TIMEOUT
    assert error_code(UndecodableEvent("not json")) is ErrorCode.UNDECODABLE
    assert error_code(UnusableImage("eps")) is ErrorCode.UNSUPPORTED_IMAGE
    assert error_code(CorruptImage("truncated")) is ErrorCode.CORRUPT_IMAGE
    assert error_code(KeyError("a bug")) is ErrorCode.UNEXPECTED
    assert error_code(DependencyUnavailable("db down")) is ErrorCode.UNEXPECTED, "never dead-lettered for itself"


def test_the_code_header_wins_and_is_kept_as_written() -> None:
    headers = [
        (DeadLetterHeader.ERROR_CLASS.value, b"somewhere.Else"),
        (DeadLetterHeader.ERROR_CODE.value, b"http_4xx"),
    ]
    assert dead_letter_error_code(headers) == "http_4xx"
    newer = [(DeadLetterHeader.ERROR_CODE.value, b"a_code_from_a_newer_worker")]
    assert dead_letter_error_code(newer) == "a_code_from_a_newer_worker"


@pytest.mark.parametrize(
    ("error_class", "message", "code"),
    [
        (b"consumer.fetch.HttpClientError", b"x answered HTTP 404", ErrorCode.HTTP_4XX),
        (b"consumer.fetch.BlockedUrl", b"x is blocked", ErrorCode.BLOCKED_URL),
        (b"consumer.fetch.FetchTimeout", b"took longer", ErrorCode.DOWNLOAD_TIMEOUT),
        (PERMANENT, b"undecodable record: value is not UTF-8 JSON", ErrorCode.UNDECODABLE),
        (
            PERMANENT,
            b"undecodable record: unknown event type/version 'image_process'/99",
            ErrorCode.UNSUPPORTED_VERSION,
        ),
        (PERMANENT, b"cannot use the image: not an image", ErrorCode.UNSUPPORTED_IMAGE),
        (PERMANENT, b"cannot decode the image: truncated", ErrorCode.CORRUPT_IMAGE),
        (
            PERMANENT,
            b"uploaded image u/1 is missing from the blob store",
            ErrorCode.MISSING_UPLOAD,
        ),
        (PERMANENT, b"something else", ErrorCode.UNEXPECTED),
        (b"builtins.KeyError", b"'a'", ErrorCode.UNEXPECTED),
    ],
)
def test_letters_from_before_codes_get_the_code_of_their_class(error_class: bytes, message: bytes, code: str) -> None:
    headers = [(DeadLetterHeader.ERROR_CLASS.value, error_class), (DeadLetterHeader.ERROR_MESSAGE.value, message)]
    assert dead_letter_error_code(headers) == code


def test_a_letter_without_either_header_is_unknown() -> None:
    assert dead_letter_error_code([("content-type", b"application/json")]) == ErrorCode.UNKNOWN
