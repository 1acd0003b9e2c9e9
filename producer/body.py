"""Reading a ``POST /images`` body in either of its two forms, within a size limit.

The route accepts JSON (``{"url", "filter"}``) and multipart uploads (``file``, ``filter``) on one path, so it
reads the body itself: at most a bounded number of bytes are ever buffered, whatever the client claims in
``Content-Length``, and every problem becomes a 422 that names the field.
"""

from __future__ import annotations

from typing import Any, NoReturn

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.types import Message

from core.imaging import UnsupportedImage, open_image
from producer.deps import get_services
from producer.intake import Upload
from producer.models import ALLOW_PRIVATE_URLS_CONTEXT, ImageJobRequest
from schemas import FilterName

MAX_JSON_BYTES = 16 * 1024
MULTIPART_OVERHEAD_BYTES = 16 * 1024
MULTIPART_FIELDS = frozenset({"file", "filter"})


class UnsupportedMediaType(Exception):
    """The body is neither JSON nor multipart form data."""


class UploadsBusy(Exception):
    """``MAX_CONCURRENT_UPLOADS`` uploads are being read already: answer 503, the client retries shortly."""


class _BodyTooLarge(Exception):
    pass


def reject(field: str, message: str, error_type: str = "value_error") -> NoReturn:
    """Fail the request with a 422 in FastAPI's usual shape, naming ``body.<field>`` (or the whole body)."""
    location = ("body", field) if field else ("body",)
    raise RequestValidationError([{"type": error_type, "loc": location, "msg": message}])


async def read_job_request(request: Request, max_upload_bytes: int) -> tuple[str | Upload, FilterName]:
    """The job's source (URL or upload) and filter, or a 422/415 explaining what is wrong."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        services = get_services(request)
        if services.uploads.locked():
            raise UploadsBusy(f"{services.settings.max_concurrent_uploads} uploads are being read")
        async with services.uploads:
            return await _read_multipart(request, max_upload_bytes)
    if media_type in ("application/json", "") or media_type.endswith("+json"):
        return await _read_json(request)
    raise UnsupportedMediaType(f"unsupported content type {media_type!r}; send JSON or multipart/form-data")


async def _read_json(request: Request) -> tuple[str, FilterName]:
    try:
        body = await _read_bounded(request, MAX_JSON_BYTES)
    except _BodyTooLarge:
        reject("", f"JSON body is larger than {MAX_JSON_BYTES} bytes", "too_large")
    try:
        allow_private = get_services(request).settings.allow_private_urls
        job = ImageJobRequest.model_validate_json(body, context={ALLOW_PRIVATE_URLS_CONTEXT: allow_private})
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_input=False)]
        ) from exc
    return str(job.url), job.filter


async def _read_multipart(request: Request, max_upload_bytes: int) -> tuple[Upload, FilterName]:
    try:
        body = await _read_bounded(request, max_upload_bytes + MULTIPART_OVERHEAD_BYTES)
    except _BodyTooLarge:
        reject("file", f"file is larger than {max_upload_bytes} bytes", "too_large")
    replayed = Request(request.scope, receive=_replay(body))
    try:
        form = await replayed.form(max_files=1, max_fields=4)
    except Exception as exc:  # python-multipart and starlette raise several types for malformed bodies
        reject("", f"malformed multipart body: {exc}")
    try:
        image_filter = _form_filter(form.get("filter"))
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            reject("file", "Field required: send the image as a file part named 'file'", "missing")
        for name in form:
            if name not in MULTIPART_FIELDS:
                reject(name, "Extra inputs are not permitted", "extra_forbidden")
        data = await upload.read(max_upload_bytes + 1)
    finally:
        await form.close()
    if len(data) > max_upload_bytes:
        reject("file", f"file is larger than {max_upload_bytes} bytes", "too_large")
    if not data:
        reject("file", "file is empty")
    try:
        open_image(data)
    except UnsupportedImage as exc:
        reject("file", str(exc), "unsupported_image")
    return Upload(data), image_filter


def _form_filter(value: Any) -> FilterName:
    if value is None:
        reject("filter", "Field required", "missing")
    try:
        return FilterName(value)
    except ValueError:
        choices = ", ".join(f"'{name.value}'" for name in FilterName)
        reject("filter", f"Input should be one of {choices}", "enum")


async def _read_bounded(request: Request, limit_bytes: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(body: bytes) -> Any:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
