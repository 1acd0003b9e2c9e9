"""What the ``/images`` routes document beyond their signatures: the two request bodies, headers and links.

FastAPI cannot describe a body the route parses itself (JSON or multipart on one path), so it is written here,
from the same models and format list the code enforces.
"""

from __future__ import annotations

from typing import Any

from core.blobs import THUMBNAIL_MEDIA_TYPE
from core.imaging import ALLOWED_IMAGE_FORMATS, IMAGE_MEDIA_TYPES, UNKNOWN_MEDIA_TYPE
from producer.models import BatchResult, ImageBatchRequest, ImageJobRequest, JobAccepted, Problem
from schemas import FilterName
from schemas.events import MAX_URL_LENGTH


def _inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its local ``$defs`` references replaced by the definitions (OpenAPI cannot resolve them)."""
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref", "")
            if reference.startswith("#/$defs/"):
                return inline(definitions[reference.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["file", "filter"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": f"The image ({', '.join(ALLOWED_IMAGE_FORMATS)}).",
        },
        "filter": {"type": "string", "enum": [name.value for name in FilterName]},
        "callback_url": {
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "maxLength": MAX_URL_LENGTH,
            "description": "Where to POST a signed JSON callback once the job is done or failed.",
        },
    },
}
SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_definitions(ImageJobRequest.model_json_schema())},
            "multipart/form-data": {
                "schema": UPLOAD_SCHEMA,
                "encoding": {"file": {"contentType": ", ".join(IMAGE_MEDIA_TYPES.values())}},
            },
        },
    }
}

# An item is meant to be an ImageJobRequest, but any item is taken and an invalid one answered in its place (200),
# so the schema says both: a validator (or the API fuzzer) must not expect a 422 for one bad item.
_BATCH_SCHEMA = _inline_definitions(ImageBatchRequest.model_json_schema())
_BATCH_SCHEMA["properties"]["jobs"]["items"] = {
    "anyOf": [_inline_definitions(ImageJobRequest.model_json_schema()), {}],
    "description": "A job `{url, filter}`; an invalid item gets its error in its place in the answer.",
}
BATCH_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _BATCH_SCHEMA}}}
}


# The scheme RequireRole registers; for a route that checks the key itself (producer.auth.require).
BEARER: dict[str, Any] = {"security": [{"HTTPBearer": []}]}
RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "required": True, "schema": {"type": "integer"}}
}
STORE_UNAVAILABLE: dict[str, Any] = {
    "model": Problem,
    "description": "The job store is unavailable; retry after Retry-After.",
    "headers": RETRY_AFTER,
}
ACCEPTED: dict[str, Any] = {
    "model": JobAccepted,
    "description": "The job is in the event log; poll `status_url`.",
    "headers": {
        "Location": {"description": "The job's status URL.", "required": True, "schema": {"type": "string"}},
        "Idempotent-Replayed": {
            "description": "Present on a retry with the same Idempotency-Key: the job it names already existed.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    },
    # What a client does next with the id (OpenAPI links; API test tools follow them too).
    "links": {
        "GetStatus": {
            "operationRef": "#/paths/~1images~1{image_id}/get",
            "parameters": {"image_id": "$response.body#/id"},
        },
        "GetResult": {
            "operationRef": "#/paths/~1images~1{image_id}~1result/get",
            "parameters": {"image_id": "$response.body#/id"},
        },
    },
}


SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: ACCEPTED,
    409: {"model": Problem, "description": "The Idempotency-Key was already used for a different request."},
    415: {"model": Problem, "description": "The body is neither JSON nor multipart/form-data."},
    # FastAPI documents 422 itself only for a route with parameters; this one reads its own (body, header).
    422: {
        "description": "The body or the Idempotency-Key is invalid, or the `callback_url` is refused (`blocked_url`: "
        "a non-public address; `callback_secret_unset`: no API key and no CALLBACK_SECRET to sign it); `detail` "
        "names each problem.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
    },
    503: {
        "model": Problem,
        "description": "The event log did not ack in time, or the job store is unavailable; retry after Retry-After.",
        "headers": RETRY_AFTER,
    },
}
BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": BatchResult,
        "description": "Each item in order: its job (accepted: its event is in the event log) or its error (no job "
        "was made of it).",
    },
    401: {"model": Problem, "description": "No valid API key."},
    403: {"model": Problem, "description": "The API key has neither the submit nor the admin role."},
    415: {"model": Problem, "description": "The body is not JSON."},
    422: {
        "description": 'The body is not `{"jobs": [...]}` with 1 to 100 items, is too large, or an '
        "Idempotency-Key was sent (not supported on a batch); `detail` names each problem.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
    },
    429: {"model": Problem, "description": "The API key is over its rate limit.", "headers": RETRY_AFTER},
    503: {
        "model": Problem,
        "description": "The event log did not commit the batch in time: no item was accepted; retry after Retry-After.",
        "headers": RETRY_AFTER,
    },
}
# Retention (README, "Retention"): a job past JOB_TTL is a tombstone, its files past RESULT_TTL are deleted.
JOB_GONE: dict[str, Any] = {
    "model": Problem,
    "description": "The job expired (`JOB_TTL` after it finished): its row and files are deleted.",
}
FILES_GONE: dict[str, Any] = {
    "model": Problem,
    "description": "The job's files expired (`RESULT_TTL` after it finished), or the job itself did (`JOB_TTL`).",
}
STATUS_RESPONSES: dict[int | str, dict[str, Any]] = {404: {"model": Problem}, 410: JOB_GONE, 503: STORE_UNAVAILABLE}
RESULT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The processed image."},
    404: {"model": Problem},
    409: {"model": Problem, "description": "The job is not done (yet)."},
    410: FILES_GONE,
    503: STORE_UNAVAILABLE,
}
LIST_RESPONSES: dict[int | str, dict[str, Any]] = {503: STORE_UNAVAILABLE}
CANCEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The job is cancelled (now, or by an earlier cancel): no worker will run it."},
    401: {"model": Problem, "description": "No valid API key."},
    403: {"model": Problem, "description": "The API key has neither the submit nor the admin role."},
    404: {
        "model": Problem,
        "description": "No such job of yours, or none recorded yet (a job's row is written just after its event "
        "is acked, at the latest by the worker that starts it): retry shortly.",
    },
    409: {"model": Problem, "description": "The job is processing, done or failed: only a queued job is cancelled."},
    410: JOB_GONE,
    429: {"model": Problem, "description": "The API key is over its rate limit.", "headers": RETRY_AFTER},
    503: STORE_UNAVAILABLE,
}
# Revalidated on every use (a re-run replaces the image under the same URL): the version tag says whether it did.
ETAG: dict[str, Any] = {
    "ETag": {"description": "The stored image's version.", "required": True, "schema": {"type": "string"}},
    "Cache-Control": {"description": "`private, no-cache`.", "required": True, "schema": {"type": "string"}},
}
THUMBNAIL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {THUMBNAIL_MEDIA_TYPE: {}},
        "description": "The thumbnail, at most 256 px a side.",
        "headers": ETAG,
    },
    404: {"model": Problem, "description": "No such job of yours, or it finished without thumbnails."},
    409: {"model": Problem, "description": "The job is not done (yet): its thumbnails are stored when it is."},
    410: FILES_GONE,
    503: STORE_UNAVAILABLE,
}
ORIGINAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        # The bytes as uploaded or downloaded: an accepted image (octet-stream only for bytes of no known format).
        "content": {media_type: {} for media_type in (*IMAGE_MEDIA_TYPES.values(), UNKNOWN_MEDIA_TYPE)},
        "description": "The image the job started from, at full size, as it was uploaded or downloaded.",
        "headers": ETAG,
    },
    404: {"model": Problem, "description": "No such job of yours, or it finished without its original kept."},
    409: {"model": Problem, "description": "A URL job not done (yet): the downloaded image is stored when it is."},
    410: FILES_GONE,
    503: STORE_UNAVAILABLE,
}
