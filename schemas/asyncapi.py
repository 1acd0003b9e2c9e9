"""The published event contract: an AsyncAPI 3.0.0 document of the main, the dead-letter and the callbacks topic.

It is built from what the code writes (the event models, the header enums, the error codes), never copied from
it, so the contract cannot drift: a model or header change changes the document, and the tests compare the
published copy in docs/ with a fresh one. Pure: topic names in, a JSON-ready dict out.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from pydantic import BaseModel

from schemas.callbacks import CALLBACK_TYPE, JobCallbackV1
from schemas.errors import ErrorCode
from schemas.events import CONTENT_TYPE, ImageProcessEvent, event_models
from schemas.headers import DeadLetterHeader, EventHeader, RedriveHeader, TraceHeader

Json = dict[str, Any]
Header = EventHeader | DeadLetterHeader | RedriveHeader | TraceHeader

ASYNCAPI_VERSION: Final = "3.0.0"
# What pydantic writes, for the files of docs/schemas/ that stand alone.
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
# Pydantic's discriminator is an object, AsyncAPI's own schema format wants a string; JSON Schema draft 07 reads
# every keyword pydantic writes and is a format every AsyncAPI tool must support.
PAYLOAD_FORMAT: Final = "application/schema+json;version=draft-07"
KAFKA_BINDING_VERSION: Final = "0.5.0"
# The settings (environment variables) the channel addresses come from; tests hold them to core.settings.
IMAGES_TOPIC_SETTING: Final = "IMAGES_TOPIC"
DLQ_TOPIC_SETTING: Final = "DLQ_TOPIC"
CALLBACKS_TOPIC_SETTING: Final = "CALLBACKS_TOPIC"
IMAGES: Final = "images"
DEAD_LETTERS: Final = "images.dlq"
CALLBACKS: Final = "images.callbacks"
UNREADABLE: Final = "dead_letter.unreadable"


class TopicNames(Protocol):
    """What the document needs of the settings: the names of the topics."""

    @property
    def images_topic(self) -> str: ...

    @property
    def dlq_topic(self) -> str: ...

    @property
    def callbacks_topic(self) -> str: ...


_COUNT_TEXT: Final[Json] = {"pattern": "^[0-9]+$"}
_DATE_TIME_TEXT: Final[Json] = {"format": "date-time"}
_IMAGE_ID_KEY: Final[Json] = {
    "type": "string",
    "format": "uuid",
    "description": "The image id (the event's `image_id`) as UTF-8 text: every event of one image goes to one "
    "partition, in order.",
}
_HEADER_SCHEMAS: Final[dict[Header, Json]] = {
    EventHeader.CONTENT_TYPE: {"description": "The value's media type."},
    EventHeader.EVENT_TYPE: {"description": "The event's `type`, so tools can route without parsing the value."},
    EventHeader.EVENT_VERSION: {"description": "The event's `version`, as decimal text."},
    DeadLetterHeader.ORIGINAL_TOPIC: {"description": "The topic the record was read from."},
    DeadLetterHeader.ORIGINAL_PARTITION: {"description": "Its partition there.", **_COUNT_TEXT},
    DeadLetterHeader.ORIGINAL_OFFSET: {"description": "Its offset there.", **_COUNT_TEXT},
    DeadLetterHeader.ORIGINAL_TIMESTAMP: {
        "description": "Its Kafka timestamp, ms since the epoch.",
        "pattern": "^-?[0-9]+$",
    },
    DeadLetterHeader.ERROR_CODE: {
        "description": "Why it failed, as a stable code: what to filter, count and redrive by. A newer worker may "
        "write codes not listed here.",
        "examples": [code.value for code in ErrorCode],
    },
    DeadLetterHeader.ERROR_CLASS: {"description": "The Python class that was raised: for debugging only, it moves."},
    DeadLetterHeader.ERROR_MESSAGE: {"description": "The error's message, at most 1 KiB of UTF-8."},
    DeadLetterHeader.ERROR_TRACEBACK: {"description": "The end of the traceback, at most 4 KiB of UTF-8."},
    DeadLetterHeader.ATTEMPTS: {"description": "How many times the worker tried the record.", **_COUNT_TEXT},
    DeadLetterHeader.FIRST_FAILURE_AT: {"description": "When the first attempt failed.", **_DATE_TIME_TEXT},
    DeadLetterHeader.LAST_FAILURE_AT: {"description": "When the last attempt failed.", **_DATE_TIME_TEXT},
    DeadLetterHeader.WORKER_ID: {"description": "The worker that gave up on it."},
    DeadLetterHeader.CONSUMER_GROUP: {"description": "That worker's consumer group."},
    RedriveHeader.COUNT: {"description": "How many times this record has been redriven.", **_COUNT_TEXT},
    RedriveHeader.GROUP: {"description": "The redrive's progress group (default `<CONSUMER_GROUP>.redrive`)."},
    RedriveHeader.DLQ_TOPIC: {"description": "The dead-letter topic the copy came from."},
    RedriveHeader.DLQ_PARTITION: {"description": "The dead letter's partition there.", **_COUNT_TEXT},
    RedriveHeader.DLQ_OFFSET: {"description": "The dead letter's offset there.", **_COUNT_TEXT},
    RedriveHeader.AT: {"description": "When the copy was published.", **_DATE_TIME_TEXT},
    TraceHeader.TRACEPARENT: {
        "description": "The W3C trace context of the span that appended the record (the API's, or a redrive's); "
        "a worker's span continues its trace. Present when the writer traces.",
        "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
    },
    TraceHeader.TRACESTATE: {"description": "The W3C trace state that goes with `traceparent`, when there is one."},
}


def asyncapi_document(topics: TopicNames) -> Json:
    """The AsyncAPI document of the pipeline's topics, with the channel addresses ``topics`` names."""
    versions = {_schema_name(key): (key, model) for key, model in event_models().items()}
    current = next(name for name, (_, model) in versions.items() if model is ImageProcessEvent)
    messages = {name: _event_message(name, key, model) for name, (key, model) in versions.items()}
    dead_letters = {f"dead_letter.{name}": _dead_letter_message(name, key) for name, (key, _) in versions.items()}
    dead_letters[UNREADABLE] = _unreadable_dead_letter()
    callback_name = _schema_name((CALLBACK_TYPE, 1))

    def refs(channel: str, names: list[str]) -> list[Json]:
        return [{"$ref": f"#/channels/{_pointer(channel)}/messages/{_pointer(name)}"} for name in names]

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Image pipeline events",
            "version": str(_version_of(ImageProcessEvent)),
            "description": "The records of the image pipeline's Kafka topics: `image_process` events on the main "
            "topic, their dead letters, and the `job_callback` records of completion callbacks. Record values are "
            "UTF-8 JSON, keys the image id as UTF-8 text, header "
            "values UTF-8 text (when a name repeats, the last value wins). `info.version` is the event version the "
            "API writes; workers read every version listed here, so deploy them first.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": {
            IMAGES: {
                "address": topics.images_topic,
                "title": "Image jobs",
                "description": f"The main topic: one `image_process` event per job, keyed by image id so the "
                f"events of one image stay in order. Its name is the setting `{IMAGES_TOPIC_SETTING}`.",
                "messages": {name: {"$ref": f"#/components/messages/{_pointer(name)}"} for name in messages},
                "x-address-setting": IMAGES_TOPIC_SETTING,
            },
            DEAD_LETTERS: {
                "address": topics.dlq_topic,
                "title": "Dead letters",
                "description": f"Records the workers gave up on, key and value unchanged, with the original "
                f"headers and the `dlq.*` ones. Its name is the setting `{DLQ_TOPIC_SETTING}`.",
                "messages": {name: {"$ref": f"#/components/messages/{_pointer(name)}"} for name in dead_letters},
                "x-address-setting": DLQ_TOPIC_SETTING,
            },
            CALLBACKS: {
                "address": topics.callbacks_topic,
                "title": "Completion callbacks",
                "description": f"One `job_callback` record per finished job that asked for a callback, keyed by "
                f"image id, read by the workers' callback consumer (group `<CONSUMER_GROUP>.callbacks`); a record it "
                f"can never read goes to `<{CALLBACKS_TOPIC_SETTING}>.dlq`. Its name is the setting "
                f"`{CALLBACKS_TOPIC_SETTING}`.",
                "messages": {callback_name: {"$ref": f"#/components/messages/{_pointer(callback_name)}"}},
                "x-address-setting": CALLBACKS_TOPIC_SETTING,
            },
        },
        "operations": {
            "submitImageJob": {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_pointer(IMAGES)}"},
                "title": "image-api appends a job",
                "description": "`POST /images` appends one event of the current version per accepted job, in a "
                "Kafka transaction, and answers `202` once it committed.",
                "messages": refs(IMAGES, [current]),
            },
            "processImageJob": {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{_pointer(IMAGES)}"},
                "title": "image-worker processes a job",
                "description": "Workers read committed events of every version and commit an offset only once its "
                "record is done or dead-lettered.",
                "messages": refs(IMAGES, list(messages)),
            },
            "deadLetterImageJob": {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_pointer(DEAD_LETTERS)}"},
                "title": "image-worker dead-letters a record",
                "description": "A record that can never succeed, or failed every retry, is copied here unchanged; "
                "its offset is committed only after this topic acked the copy.",
                "messages": refs(DEAD_LETTERS, list(dead_letters)),
            },
            "readDeadLetters": {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{_pointer(DEAD_LETTERS)}"},
                "title": "image-replay redrive reads dead letters",
                "description": "`image-replay redrive` (and `POST /admin/dead-letters/redrive`) reads the dead "
                "letters its filters select, at most once per progress group.",
                "messages": refs(DEAD_LETTERS, list(dead_letters)),
            },
            "redriveDeadLetters": {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_pointer(IMAGES)}"},
                "title": "image-replay redrive re-publishes them",
                "description": "Each selected dead letter's key and value go back to the main topic as they were, "
                "with the original non-`dlq.*` headers and the `redrive.*` ones (a value that never decoded goes "
                "back as it was too, and is dead-lettered again).",
                "messages": refs(IMAGES, list(messages)),
            },
            "appendJobCallback": {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_pointer(CALLBACKS)}"},
                "title": "image-worker appends a finished job's callback",
                "description": "When a job that asked for a callback is done, or failed after its dead letter, the "
                "worker that finished it appends one record (again if it runs the job's event again: the delivery "
                "id is the same, and a delivered one is not sent twice).",
                "messages": refs(CALLBACKS, [callback_name]),
            },
            "deliverJobCallback": {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{_pointer(CALLBACKS)}"},
                "title": "image-worker's callback consumer POSTs it",
                "description": "The callback consumer POSTs the signed callback to the job's URL, retrying with "
                "back-off up to `CALLBACK_MAX_ATTEMPTS`, and commits the offset once it is delivered or given up on.",
                "messages": refs(CALLBACKS, [callback_name]),
            },
        },
        "components": {
            "schemas": {name: _payload_schema(name, model) for name, (_, model) in versions.items()},
            "messages": messages | dead_letters | {callback_name: _callback_message(callback_name)},
        },
    }


def event_json_schemas() -> dict[str, Json]:
    """Each event version's JSON Schema by name (``image_process.v2``), standing alone: docs/schemas/ for
    consumers outside Python."""
    return {
        _schema_name(key): {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema()}
        for key, model in event_models().items()
    }


def schema_reference_prefix(name: str) -> str:
    """Where the definitions of event schema ``name`` sit in the document (its ``$ref``\\ s point there)."""
    return f"#/components/schemas/{_pointer(name)}/schema/$defs/"


def _payload_schema(name: str, model: type[BaseModel]) -> Json:
    # The model's own JSON Schema; only its references change, as "#/..." means the whole document here.
    return {
        "schemaFormat": PAYLOAD_FORMAT,
        "schema": model.model_json_schema(ref_template=schema_reference_prefix(name) + "{model}"),
    }


def _event_message(name: str, event: tuple[str, int], model: type[BaseModel]) -> Json:
    return {
        "name": name,
        "title": f"{name}: an image job",
        "summary": " ".join((model.__doc__ or "").split("\n\n", 1)[0].split()),
        "contentType": CONTENT_TYPE,
        "headers": _headers(
            required=list(EventHeader),
            optional=[*RedriveHeader, *TraceHeader],
            event=event,
            description="The event headers, the trace context when the writer traces; a redriven copy also "
            "carries the `redrive.*` ones.",
        ),
        "payload": {"$ref": f"#/components/schemas/{_pointer(name)}"},
        "bindings": {"kafka": {"key": _IMAGE_ID_KEY, "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _dead_letter_message(name: str, event: tuple[str, int]) -> Json:
    return {
        "name": f"dead_letter.{name}",
        "title": f"A dead {name} event",
        "summary": "The event as it was on the main topic, with why and where it failed.",
        "contentType": CONTENT_TYPE,
        "headers": _headers(
            required=[*EventHeader, *DeadLetterHeader],
            optional=[*RedriveHeader, *TraceHeader],
            event=event,
            description="The original headers, then the `dlq.*` ones.",
        ),
        "payload": {"$ref": f"#/components/schemas/{_pointer(name)}"},
        "bindings": {
            "kafka": {
                "key": {**_IMAGE_ID_KEY, "description": "The original record's key, byte for byte: the image id."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _callback_message(name: str) -> Json:
    return {
        "name": name,
        "title": f"{name}: a completion callback to deliver",
        "summary": " ".join((JobCallbackV1.__doc__ or "").split("\n\n", 1)[0].split()),
        "contentType": CONTENT_TYPE,
        "headers": _headers(
            required=list(EventHeader),
            optional=[],
            event=(CALLBACK_TYPE, 1),
            description="The record's headers, as an event's.",
        ),
        # Inline: components.schemas holds the image_process versions only.
        "payload": {"schemaFormat": PAYLOAD_FORMAT, "schema": JobCallbackV1.model_json_schema()},
        "bindings": {"kafka": {"key": _IMAGE_ID_KEY, "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _unreadable_dead_letter() -> Json:
    return {
        "name": UNREADABLE,
        "title": "A dead record that is no event",
        "summary": "A value no event model accepts (`dlq.error.code` `undecodable` or `unsupported_version`).",
        "contentType": "application/octet-stream",
        "headers": _headers(
            required=list(DeadLetterHeader),
            optional=[*EventHeader, *RedriveHeader, *TraceHeader],
            event=None,
            description="Whatever headers the record had, then the `dlq.*` ones.",
        ),
        "payload": {"description": "The original record's value, byte for byte."},
        "bindings": {
            "kafka": {
                "key": {"description": "The original record's key, byte for byte."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _headers(
    *, required: list[Header], optional: list[Header], event: tuple[str, int] | None, description: str
) -> Json:
    """The headers' schema; ``event`` (type, version) fixes the event headers' values, as
    :func:`schemas.events.event_headers` writes them."""
    values: dict[Header, Json] = {}
    if event is not None:
        values = {
            EventHeader.CONTENT_TYPE: {"const": CONTENT_TYPE},
            EventHeader.EVENT_TYPE: {"const": event[0]},
            EventHeader.EVENT_VERSION: {"const": str(event[1])},
        }
    properties = {
        header.value: {"type": "string", **_HEADER_SCHEMAS.get(header, {}), **values.get(header, {})}
        for header in [*required, *optional]
    }
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": [header.value for header in required],
    }


def _schema_name(key: tuple[str, int]) -> str:
    event_type, version = key
    return f"{event_type}.v{version}"


def _version_of(model: type[BaseModel]) -> int:
    version: int = model.model_fields["version"].default
    return version


def _pointer(name: str) -> str:
    """``name`` as one JSON Pointer segment (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")
