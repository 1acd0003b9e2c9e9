"""Reading a ``POST /images`` body in either of its two forms, within a size limit.

The route accepts JSON (``{"url", "filter", "callback_url"}``) and multipart uploads (``file``, ``filter``,
``callback_url``) on one path, so it
reads the body itself: at most a bounded number of bytes are ever read, whatever the client claims in
``Content-Length``, an upload is spooled to a file rather than held in memory, and every problem becomes a 422
that names the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from core.imaging import UnsupportedImage, open_image
from producer.deps import get_services
from producer.intake import Upload
from producer.models import ALLOW_PRIVATE_URLS_CONTEXT, CallbackTarget, ImageJobRequest
from schemas import FilterName

MAX_JSON_BYTES = 16 * 1024
MULTIPART_OVERHEAD_BYTES = 16 * 1024
MULTIPART_FIELDS = frozenset({"file", "filter", "callback_url"})
DIGEST_CHUNK_BYTES = 256 * 1024


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


JobRequest = tuple[str | Upload, FilterName, str | None]
"""A job's source (URL or upload), filter and callback URL (None: no callback)."""


@contextlib.asynccontextmanager
async def job_request(request: Request, max_upload_bytes: int) -> AsyncIterator[JobRequest]:
    """The job's source (URL or upload), filter and callback URL for the block, or a 422/415 explaining what is
    wrong.

    An upload is a spooled file (on disk past 1 MiB), open until the block ends: the intake copies it into the
    store from there, so an upload is never held in memory whole.
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        async with _multipart(request, max_upload_bytes) as parts:
            yield parts
    elif media_type in ("application/json", "") or media_type.endswith("+json"):
        yield await _read_json(request)
    else:
        raise UnsupportedMediaType(f"unsupported content type {media_type!r}; send JSON or multipart/form-data")


@contextlib.asynccontextmanager
async def bounded_form(request: Request, max_upload_bytes: int, *, max_fields: int) -> AsyncIterator[FormData]:
    """The multipart form for the block, read within ``max_upload_bytes`` whatever ``Content-Length`` says, its
    file spooled; 422 when it is malformed or too large, :class:`UploadsBusy` when enough uploads are being read."""
    services = get_services(request)
    if services.uploads.locked():
        raise UploadsBusy(f"{services.settings.max_concurrent_uploads} uploads are being read")
    limit_bytes = max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    async with services.uploads:
        if _declared_length(request) > limit_bytes:
            reject("file", f"file is larger than {max_upload_bytes} bytes", "too_large")
        bounded = Request(request.scope, receive=_bounded_receive(request.receive, limit_bytes))
        try:
            form = await bounded.form(max_files=1, max_fields=max_fields)
        except _BodyTooLarge:
            reject("file", f"file is larger than {max_upload_bytes} bytes", "too_large")
        except ClientDisconnect:
            raise
        except Exception as exc:  # python-multipart and starlette raise several types for malformed bodies
            reject("", f"malformed multipart body: {exc}")
        try:
            yield form
        finally:
            await form.close()


def url_job(url: str, image_filter: FilterName, *, allow_private_urls: bool) -> str:
    """``url`` if the API would take it in a JSON request (http(s), length, no non-public literal address)."""
    try:
        job = ImageJobRequest.model_validate(
            {"url": url, "filter": image_filter}, context={ALLOW_PRIVATE_URLS_CONTEXT: allow_private_urls}
        )
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_input=False)]
        ) from exc
    return str(job.url)


async def bounded_json(request: Request, limit_bytes: int) -> bytes:
    """The body's bytes, or a 422 ``too_large`` once it passes ``limit_bytes`` (whatever it claimed)."""
    try:
        return await _read_bounded(request, limit_bytes)
    except _BodyTooLarge:
        reject("", f"JSON body is larger than {limit_bytes} bytes", "too_large")


async def _read_json(request: Request) -> JobRequest:
    body = await bounded_json(request, MAX_JSON_BYTES)
    try:
        allow_private = get_services(request).settings.allow_private_urls
        job = ImageJobRequest.model_validate_json(body, context={ALLOW_PRIVATE_URLS_CONTEXT: allow_private})
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_input=False)]
        ) from exc
    return str(job.url), job.filter, None if job.callback_url is None else str(job.callback_url)


@contextlib.asynccontextmanager
async def _multipart(request: Request, max_upload_bytes: int) -> AsyncIterator[JobRequest]:
    async with bounded_form(request, max_upload_bytes, max_fields=4) as form:
        image_filter = form_filter(form.get("filter"))
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            reject("file", "Field required: send the image as a file part named 'file'", "missing")
        for name in form:
            if name not in MULTIPART_FIELDS:
                reject(name, "Extra inputs are not permitted", "extra_forbidden")
        callback_url = form_callback_url(form.get("callback_url"), get_services(request).settings.allow_private_urls)
        yield await checked_upload(upload, max_upload_bytes), image_filter, callback_url


def form_callback_url(value: Any, allow_private_urls: bool) -> str | None:
    """A multipart ``callback_url`` field checked as the JSON field is (None when absent)."""
    if value is None:
        return None
    if not isinstance(value, str):
        reject("callback_url", "Input should be a valid URL, not a file", "url_type")
    try:
        target = CallbackTarget.model_validate(
            {"callback_url": value}, context={ALLOW_PRIVATE_URLS_CONTEXT: allow_private_urls}
        )
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_input=False)]
        ) from exc
    return None if target.callback_url is None else str(target.callback_url)


async def checked_upload(upload: UploadFile, max_upload_bytes: int) -> Upload:
    """The upload if it is a non-empty image in an accepted format within the limits, with its digest."""
    size = upload.size or 0
    if size > max_upload_bytes:
        reject("file", f"file is larger than {max_upload_bytes} bytes", "too_large")
    if not size:
        reject("file", "file is empty")
    file = upload.file

    def inspect() -> str:
        file.seek(0)
        digest = hashlib.sha256()
        while chunk := file.read(DIGEST_CHUNK_BYTES):
            digest.update(chunk)
        file.seek(0)
        open_image(file)
        file.seek(0)
        return digest.hexdigest()

    try:
        sha256 = await asyncio.to_thread(inspect)
    except UnsupportedImage as exc:
        reject("file", str(exc), "unsupported_image")
    return Upload(file, size, sha256)


def form_filter(value: Any) -> FilterName:
    if value is None:
        reject("filter", "Field required", "missing")
    try:
        return FilterName(value)
    except ValueError:
        choices = ", ".join(f"'{name.value}'" for name in FilterName)
        reject("filter", f"Input should be one of {choices}", "enum")


def _declared_length(request: Request) -> int:
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else 0


async def _read_bounded(request: Request, limit_bytes: int) -> bytes:
    if _declared_length(request) > limit_bytes:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _bounded_receive(receive: Receive, limit_bytes: int) -> Receive:
    """``receive`` that fails once the body passes ``limit_bytes``, whatever ``Content-Length`` claimed."""
    received = 0

    async def bounded() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit_bytes:
                raise _BodyTooLarge
        return message

    return bounded
