"""The blob store: uploaded images, processed results and their thumbnails, behind one interface with two homes.

Kafka carries references, never image bytes. Keys are deterministic per image (``uploads/<id>``,
``originals/<id>``, ``results/<id>.png``, ``thumbnails/<id>/source.webp``...), so a re-run overwrites instead of
piling up copies, and every write is atomic: a reader never sees half an image. ``BLOB_STORE_URL`` says where
blobs live: a folder on this machine (:mod:`core.file_blobs`) or an S3-compatible object store that any number of
machines share (:mod:`core.s3_blobs`). Nothing outside these modules touches a path.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import BinaryIO, Final

from core.settings import Settings

CHUNK_BYTES = 256 * 1024
# WEBP, not PNG: a photo's 256 px thumbnail is a few KB instead of 50-100 KB, and a console page shows dozens.
THUMBNAIL_MEDIA_TYPE: Final = "image/webp"


class ThumbnailKind(enum.StrEnum):
    """The image a thumbnail shows: the job's source, or its result."""

    SOURCE = "source"
    RESULT = "result"


class BlobMissing(LookupError):
    """No blob is stored under the key (never written, or deleted since)."""


class BlobStoreUnavailable(OSError):
    """The store did not do what was asked (unreachable, refused, failed): worth another try later."""


@dataclass(frozen=True, slots=True)
class BlobStream:
    """A stored blob being read: its size and version tag first, then its bytes in chunks (call ``aclose`` if the
    chunks are not read to the end)."""

    size_bytes: int
    etag: str
    chunks: AsyncIterator[bytes]
    release: Callable[[], None] = lambda: None  # frees what the stream holds before its first chunk (a file)

    async def aclose(self) -> None:
        close = getattr(self.chunks, "aclose", None)
        if close is not None:
            await close()
        self.release()


class BlobStore(abc.ABC):
    """Blobs by key; every write replaces the whole blob atomically."""

    @staticmethod
    def upload_key(image_id: str) -> str:
        return f"uploads/{image_id}"

    @staticmethod
    def result_key(image_id: str) -> str:
        return f"results/{image_id}.png"

    @staticmethod
    def original_key(image_id: str) -> str:
        """The downloaded image of a URL job, as fetched (an upload's stays at its :meth:`upload_key`)."""
        return f"originals/{image_id}"

    @staticmethod
    def thumbnail_key(image_id: str, kind: ThumbnailKind) -> str:
        """The worker's thumbnail of the source or the result, in :data:`THUMBNAIL_MEDIA_TYPE`."""
        return f"thumbnails/{image_id}/{ThumbnailKind(kind).value}.webp"

    @abc.abstractmethod
    async def put(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    async def put_file(self, key: str, source: BinaryIO) -> None:
        """Store what ``source`` holds from its current position on, in chunks (never whole in memory)."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes:
        """The whole blob; raises :class:`BlobMissing`."""

    @abc.abstractmethod
    async def open(self, key: str) -> BlobStream:
        """The blob as a stream (for serving it); raises :class:`BlobMissing`."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key``; a key already gone is fine."""

    @abc.abstractmethod
    async def keys_older_than(self, prefix: str, age_s: float) -> list[str]:
        """Keys under ``prefix`` (a folder such as ``uploads``) last written more than ``age_s`` ago."""

    async def signed_url(self, key: str, expires_s: int) -> str | None:
        """A URL that lets its holder download ``key`` for ``expires_s`` seconds, or None if the store has none."""
        return None


def open_blob_store(settings: Settings) -> BlobStore:
    """The store ``BLOB_STORE_URL`` names (default: the folder ``STORAGE_DIR``)."""
    from core.file_blobs import FileBlobStore  # imported here: each backend pulls in only its own libraries
    from core.s3_blobs import S3BlobStore

    location = settings.blob_store_location()
    if location.scheme == "s3":
        return S3BlobStore(settings, bucket=location.bucket, prefix=location.prefix)
    return FileBlobStore(location.folder)
