"""Completion callbacks: the ``job_callback`` record a worker appends when a job ends, the JSON body the callback URL
receives, its HTTP headers and their signature.

The signature is Stripe's and GitHub's scheme: ``HMAC-SHA256(secret, f"{timestamp}.{body}")`` in lower-case hex,
where ``timestamp`` is the ``Webhook-Timestamp`` header (Unix seconds) and ``body`` the raw request body. The
timestamp is signed too, so a receiver that refuses old timestamps refuses replays. Both sides of the contract
(the worker that signs, any receiver that verifies) use :func:`signature` and :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from enum import StrEnum
from typing import Final, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from schemas.events import EncodedImageUrl, record_headers

CALLBACK_TYPE: Final = "job_callback"
SIGNATURE_VERSION: Final = "v1"
DEFAULT_TOLERANCE_S: Final = 300
"""How old a timestamp a receiver should still accept (Stripe's default): older ones may be replays."""


class CallbackHeader(StrEnum):
    """HTTP headers of a callback request (names are case-insensitive on the wire)."""

    DELIVERY_ID = "Webhook-Id"
    """The same for every attempt of one delivery: a receiver that sees it twice has seen the callback already."""
    TIMESTAMP = "Webhook-Timestamp"
    """When this attempt was signed, Unix seconds."""
    SIGNATURE = "Webhook-Signature"
    """``v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobCallbackV1(_Frozen):
    """A finished job whose client asked to be called back: the worker that finished it appends this record to the
    callbacks topic (keyed by image id), and the callback consumer delivers it.

    ``delivery_id`` derives from the image id and the status, so a record appended twice (a worker retried after
    the append) is one delivery: the consumer skips it once delivered.
    """

    type: Literal["job_callback"] = CALLBACK_TYPE
    version: Literal[1] = 1
    delivery_id: UUID
    image_id: UUID
    status: Literal["done", "failed"]
    callback_url: EncodedImageUrl
    owner: str | None = Field(default=None, max_length=36, description="The API key whose secret signs the callback.")
    finished_at: AwareDatetime
    error: str | None = None


class CallbackPayload(_Frozen):
    """The JSON body POSTed to the callback URL."""

    type: Literal["image.done", "image.failed"]
    delivery_id: UUID
    image_id: UUID
    status: Literal["done", "failed"]
    status_url: str = Field(description="The job's status path on the API, e.g. /images/<id>.")
    result_url: str | None = Field(description="The result's path on the API once done; null when failed.")
    error: str | None
    finished_at: AwareDatetime

    @classmethod
    def of(cls, callback: JobCallbackV1) -> CallbackPayload:
        base = f"/images/{callback.image_id}"
        return cls(
            type="image.done" if callback.status == "done" else "image.failed",
            delivery_id=callback.delivery_id,
            image_id=callback.image_id,
            status=callback.status,
            status_url=base,
            result_url=f"{base}/result" if callback.status == "done" else None,
            error=callback.error,
            finished_at=callback.finished_at,
        )


class MalformedCallback(ValueError):
    """The record is not a ``job_callback`` this code reads: it can never be delivered."""


def encode_callback(callback: JobCallbackV1) -> bytes:
    return callback.model_dump_json().encode()


def callback_headers(callback: JobCallbackV1) -> list[tuple[str, bytes]]:
    """Record headers, as :func:`schemas.events.event_headers` writes them for events."""
    return record_headers(callback.type, callback.version)


def decode_callback(value: bytes | None) -> JobCallbackV1:
    """Parse a callbacks-topic record value; raises :class:`MalformedCallback`."""
    if value is None:
        raise MalformedCallback("record has no value (tombstone)")
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedCallback(f"value is not UTF-8 JSON: {exc}") from exc
    if not isinstance(document, dict) or (document.get("type"), document.get("version")) != (CALLBACK_TYPE, 1):
        raise MalformedCallback("value is not a job_callback version 1")
    try:
        return JobCallbackV1.model_validate(document)
    except ValidationError as exc:
        raise MalformedCallback(f"job_callback v1 does not match its schema: {exc}") from exc


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Webhook-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    message = f"{timestamp}.".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    *,
    timestamp: str,
    signature_header: str,
    body: bytes,
    now_s: float,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether a received callback is genuine and fresh: what a receiver runs on the raw body before parsing it.

    Compared in constant time; a timestamp further than ``tolerance_s`` from ``now_s`` is refused (a replay).
    """
    if not timestamp.isdigit() or abs(now_s - int(timestamp)) > tolerance_s:
        return False
    expected = signature(secret, int(timestamp), body)
    return any(hmac.compare_digest(expected, part.strip()) for part in signature_header.split(","))
