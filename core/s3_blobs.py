"""Blobs as objects in an S3-compatible store (AWS S3, SeaweedFS, MinIO, ...): what machines share nothing but.

Built on obstore (Rust's ``object_store``): measured against aioboto3 on the same SeaweedFS server, it put and
got 20 KB objects 4x faster (141 against 35 pairs/s, 16 at once) and matched it on 1 MB ones, with one
dependency instead of botocore's. An S3 PUT replaces an object whole, so readers never see half an image; a file
upload over 5 MiB goes up in parts, read from its spool file as they are sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import BinaryIO

import obstore
from obstore.exceptions import BaseError as ObjectStoreError
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from core.blobs import CHUNK_BYTES, BlobMissing, BlobStore, BlobStoreUnavailable, BlobStream
from core.settings import Settings


class S3BlobStore(BlobStore):
    """Objects under ``prefix`` in ``bucket``; keys are the same as the folder store's."""

    def __init__(self, settings: Settings, *, bucket: str, prefix: str = "") -> None:
        endpoint, secret = settings.s3_endpoint_url, settings.aws_secret_access_key
        given = {
            "endpoint": endpoint,
            "access_key_id": settings.aws_access_key_id,
            "secret_access_key": secret.get_secret_value() if secret else None,
        }
        # Unset: obstore finds credentials as AWS SDKs do (instance profiles, web identity, ~/.aws).
        self._store = S3Store(
            bucket,
            prefix=prefix or None,
            region=settings.aws_region,
            client_options={"allow_http": bool(endpoint and endpoint.startswith("http://"))},
            **{name: value for name, value in given.items() if value is not None},  # type: ignore[arg-type]
        )

    async def put(self, key: str, data: bytes) -> None:
        with _translated(key):
            await obstore.put_async(self._store, key, data)

    async def put_file(self, key: str, source: BinaryIO) -> None:
        with _translated(key):
            await obstore.put_async(self._store, key, source)

    async def get(self, key: str) -> bytes:
        with _translated(key):
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())

    async def open(self, key: str) -> BlobStream:
        with _translated(key):
            result = await obstore.get_async(self._store, key)
        meta = result.meta

        async def chunks() -> AsyncIterator[bytes]:
            with _translated(key):
                async for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
                    yield bytes(chunk)

        return BlobStream(meta["size"], meta["e_tag"] or f'"{meta["last_modified"].timestamp():.6f}"', chunks())

    async def exists(self, key: str) -> bool:
        try:
            with _translated(key):
                await obstore.head_async(self._store, key)
        except BlobMissing:
            return False
        return True

    async def delete(self, key: str) -> None:
        with contextlib.suppress(BlobMissing), _translated(key):
            await obstore.delete_async(self._store, key)

    async def keys_older_than(self, prefix: str, age_s: float) -> list[str]:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
        keys = []
        with _translated(prefix):
            async for batch in obstore.list(self._store, f"{prefix}/"):
                keys += [meta["path"] for meta in batch if meta["last_modified"] < cutoff]
        return keys

    async def signed_url(self, key: str, expires_s: int) -> str | None:
        with _translated(key):
            return await obstore.sign_async(self._store, "GET", key, dt.timedelta(seconds=expires_s))


@contextlib.contextmanager
def _translated(key: str) -> Iterator[None]:
    """obstore's errors as the store's own: missing, or unavailable (to be retried)."""
    try:
        yield
    except (NotFoundError, FileNotFoundError) as exc:  # obstore raises the built-in one for a missing object
        raise BlobMissing(key) from exc
    except (ObjectStoreError, OSError) as exc:
        raise BlobStoreUnavailable(f"object store: {' '.join(str(exc).split()[:40])}") from exc
