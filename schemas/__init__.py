"""The contract of both sides: versioned event models, header names and dead-letter error codes."""

from schemas.errors import ErrorCode, dead_letter_error_code
from schemas.events import (
    BlobSource,
    DecodedEvent,
    EventDecodeError,
    ImageProcessEvent,
    ImageProcessV1,
    ImageProcessV2,
    ImageProcessV3,
    ImageSource,
    MalformedEvent,
    UnsupportedEventVersion,
    UrlSource,
    decode_event,
    encode_event,
    event_headers,
    event_models,
)
from schemas.filters import FilterName
from schemas.headers import (
    DEAD_LETTER_PREFIX,
    REDRIVE_PREFIX,
    DeadLetterHeader,
    EventHeader,
    RedriveHeader,
    TraceHeader,
    last_header,
)

__all__ = [
    "DEAD_LETTER_PREFIX",
    "REDRIVE_PREFIX",
    "BlobSource",
    "DeadLetterHeader",
    "DecodedEvent",
    "ErrorCode",
    "EventDecodeError",
    "EventHeader",
    "FilterName",
    "ImageProcessEvent",
    "ImageProcessV1",
    "ImageProcessV2",
    "ImageProcessV3",
    "ImageSource",
    "MalformedEvent",
    "RedriveHeader",
    "TraceHeader",
    "UnsupportedEventVersion",
    "UrlSource",
    "dead_letter_error_code",
    "decode_event",
    "encode_event",
    "event_headers",
    "event_models",
    "last_header",
]
