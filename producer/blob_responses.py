"""A stored blob as an HTTP response: streamed with its length and version tag, or 304 when the client has it.

A re-run of a job replaces its blobs under the same keys, so caches must revalidate (``private, no-cache`` with an
``ETag``) rather than keep a copy for some time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from core.blobs import BlobMissing, BlobStore
from core.imaging import sniff_media_type

CACHE_CONTROL = "private, no-cache"


async def blob_response(
    request: Request, blobs: BlobStore, key: str, *, media_type: str | None, missing: HTTPException
) -> Response:
    """The blob at ``key`` as ``media_type`` (None: named from its first bytes); raises ``missing`` when the store
    does not hold it."""
    try:
        blob = await blobs.open(key)
    except BlobMissing:
        raise missing from None
    headers = {"ETag": blob.etag, "Cache-Control": CACHE_CONTROL}
    if blob.etag in request.headers.get("if-none-match", ""):
        await blob.aclose()
        return Response(status_code=304, headers=headers)
    headers["Content-Length"] = str(blob.size_bytes)
    chunks = blob.chunks
    if media_type is None:
        try:
            first = await anext(chunks, b"")
        except BaseException:
            await blob.aclose()
            raise
        media_type = sniff_media_type(first)
        chunks = _after(first, chunks)
    return StreamingResponse(chunks, media_type=media_type, headers=headers)


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first``, then what ``rest`` yields (closing ``rest`` however the response ends)."""
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()
