"""The ``image_process`` event: its versioned models and its wire format.

An event is UTF-8 JSON with ``type`` and ``version`` fields. Decoding looks at those two first and then
validates against the model registered for that pair, so a consumer can tell "not an event at all" from "an
event from a newer producer" and dead-letter either with a precise reason. Models are frozen and forbid extra
fields: a producer that drifts from the schema is caught at the consumer, not half-processed.
"""

from __future__ import annotations

import json
from typing import Annotated, Final, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, UrlConstraints, ValidationError

from schemas.filters import FilterName
from schemas.headers import EventHeader

EVENT_TYPE: Final = "image_process"
CONTENT_TYPE: Final = "application/json"
MAX_URL_LENGTH: Final = 2048
# What a URL a client sent within MAX_URL_LENGTH can grow to in the event, which carries it normalised and
# percent-encoded: a character becomes at most 12 (a 4-byte UTF-8 character as four %XX), and a "/" may be added.
# The event must take every URL the API accepts, or an accepted request could not be turned into its event.
MAX_ENCODED_URL_LENGTH: Final = 32 * 1024

ImageUrl = Annotated[HttpUrl, UrlConstraints(max_length=MAX_URL_LENGTH, allowed_schemes=["http", "https"])]
"""A URL as a client sends it to the API."""
EncodedImageUrl = Annotated[
    HttpUrl, UrlConstraints(max_length=MAX_ENCODED_URL_LENGTH, allowed_schemes=["http", "https"])
]
"""A URL as an event carries it: normalised and percent-encoded."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UrlSource(_Frozen):
    """The image is fetched from a public http(s) URL."""

    kind: Literal["url"] = "url"
    url: EncodedImageUrl


class BlobSource(_Frozen):
    """The image was uploaded; its bytes sit in the blob store under ``key``, never in the event."""

    kind: Literal["blob"] = "blob"
    # Relative path segments only: no "..", no leading "/" or ".", so a key can never leave the store.
    key: str = Field(max_length=512, pattern=r"^[\w-][\w.-]*(/[\w-][\w.-]*)*$")
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


ImageSource = Annotated[UrlSource | BlobSource, Field(discriminator="kind")]


class _ImageProcess(_Frozen):
    """The request to apply ``filter`` to one image, as every version carries it.

    ``event_id`` is the idempotency key of the work (a redelivered or re-sent event has the same one);
    ``image_id`` is the Kafka record key, so all events of one image stay in one partition, in order.
    """

    type: Literal["image_process"] = EVENT_TYPE
    event_id: UUID
    image_id: UUID
    source: ImageSource
    filter: FilterName
    requested_at: AwareDatetime


class ImageProcessV1(_ImageProcess):
    """Version 1: the request alone."""

    version: Literal[1] = 1


class ImageProcessV2(_ImageProcess):
    """Version 2 adds the request's fingerprint (what an ``Idempotency-Key`` retry is compared by) and the API
    key that made it, so the job row a worker creates before the API's says which request and whose it is."""

    version: Literal[2] = 2
    request_fingerprint: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    owner: str | None = Field(default=None, max_length=36, description="The id of the API key that submitted it.")


class ImageProcessV3(ImageProcessV2):
    """Version 3 adds the URL the worker calls back once the job is done or failed (a signed webhook).

    A new version rather than a new optional field of version 2: version 2 forbids unknown fields, so a worker of
    the previous release would dead-letter such an event instead of processing it (deploy workers first)."""

    version: Literal[3] = 3  # type: ignore[assignment]
    callback_url: EncodedImageUrl | None = None


ImageProcessEvent = ImageProcessV3
"""The version this code produces; consumers accept every registered version (deploy workers first)."""
DecodedEvent = ImageProcessV1 | ImageProcessV2 | ImageProcessV3
"""What a consumer may read."""
EventModel = type[ImageProcessV1] | type[ImageProcessV2] | type[ImageProcessV3]

_MODELS: Final[dict[tuple[str, int], EventModel]] = {
    (EVENT_TYPE, 1): ImageProcessV1,
    (EVENT_TYPE, 2): ImageProcessV2,
    (EVENT_TYPE, 3): ImageProcessV3,
}


def event_models() -> dict[tuple[str, int], EventModel]:
    """Every (type, version) a consumer accepts, with its model: what the published contract describes."""
    return dict(_MODELS)


class EventDecodeError(ValueError):
    """The record can never be processed as it is: dead-letter it, do not retry."""


class MalformedEvent(EventDecodeError):
    """Not UTF-8 JSON, or JSON that does not match the model its type and version name."""


class UnsupportedEventVersion(EventDecodeError):
    """A well-formed event of a type or version this code does not know (e.g. from a newer producer)."""


def encode_event(event: DecodedEvent) -> bytes:
    """The record value for ``event``."""
    return event.model_dump_json().encode()


def event_headers(event: DecodedEvent) -> list[tuple[str, bytes]]:
    """Record headers that let tools route or filter without parsing the value."""
    return record_headers(event.type, event.version)


def record_headers(record_type: str, version: int) -> list[tuple[str, bytes]]:
    """The headers of every typed JSON record the pipeline writes (events, callbacks): content type, type, version."""
    return [
        (EventHeader.CONTENT_TYPE.value, CONTENT_TYPE.encode()),
        (EventHeader.EVENT_TYPE.value, record_type.encode()),
        (EventHeader.EVENT_VERSION.value, str(version).encode()),
    ]


def decode_event(value: bytes | None) -> DecodedEvent:
    """Parse a record value, raising an :class:`EventDecodeError` subclass that says why it is unusable."""
    if value is None:
        raise MalformedEvent("record has no value (tombstone)")
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"value is not UTF-8 JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedEvent(f"value is JSON {type(document).__name__}, expected an object")
    event_type, version = document.get("type"), document.get("version")
    model = _MODELS.get((event_type, version)) if isinstance(event_type, str) and isinstance(version, int) else None
    if model is None:
        raise UnsupportedEventVersion(f"unknown event type/version {event_type!r}/{version!r}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise MalformedEvent(f"{event_type} v{version} does not match its schema: {exc}") from exc
