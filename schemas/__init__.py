"""Versioned event models shared by the producer and the consumer."""

from schemas.events import (
    BlobSource,
    EventDecodeError,
    ImageProcessEvent,
    ImageProcessV1,
    ImageSource,
    MalformedEvent,
    UnsupportedEventVersion,
    UrlSource,
    decode_event,
    encode_event,
    event_headers,
)
from schemas.filters import FilterName

__all__ = [
    "BlobSource",
    "EventDecodeError",
    "FilterName",
    "ImageProcessEvent",
    "ImageProcessV1",
    "ImageSource",
    "MalformedEvent",
    "UnsupportedEventVersion",
    "UrlSource",
    "decode_event",
    "encode_event",
    "event_headers",
]
