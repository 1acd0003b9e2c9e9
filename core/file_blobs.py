"""Blobs as files under one root folder: the default store, for one machine (or a folder all machines mount).

Every write is a temporary file renamed into place, so a reader never sees half an image. Files get mode 0666 less
the process umask, like any file the process creates: an API and workers running as different users share one
folder by their umask and group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from core.blobs import CHUNK_BYTES, BlobMissing, BlobStore, BlobStream


class FileBlobStore(BlobStore):
    """Files under ``root``, addressed by relative keys that can never escape it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        """The file behind ``key``; a key that would leave the root raises ``ValueError``."""
        # Lexical normalisation, no file-system calls: the root is resolved once, and only this code writes below it.
        path = Path(os.path.normpath(self.root / key))
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"blob key {key!r} is outside the store")
        return path

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write_atomically, self.path(key), data)

    async def put_file(self, key: str, source: BinaryIO) -> None:
        await asyncio.to_thread(self._write_atomically, self.path(key), source)

    async def get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self.path(key).read_bytes)
        except FileNotFoundError as exc:
            raise BlobMissing(key) from exc

    async def open(self, key: str) -> BlobStream:
        path = self.path(key)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError as exc:
            raise BlobMissing(key) from exc
        # The open file stays the blob that was opened, even if a re-run replaces it meanwhile.
        status = os.fstat(file.fileno())

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
                    yield chunk
            finally:
                file.close()

        return BlobStream(status.st_size, f'"{status.st_mtime_ns:x}-{status.st_size:x}"', chunks(), file.close)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> None:
        """Remove ``key``; a key already gone is fine. A per-image folder (``thumbnails/<id>/``) this empties goes
        too: the retention sweep would otherwise leave one empty folder per expired job behind."""
        path = self.path(key)

        def remove() -> None:
            path.unlink(missing_ok=True)
            if path.parent.parent != self.root:  # never a top folder such as uploads/
                with contextlib.suppress(OSError):  # not empty yet, or already gone
                    path.parent.rmdir()

        await asyncio.to_thread(remove)

    async def keys_older_than(self, prefix: str, age_s: float) -> list[str]:
        """Keys under ``prefix`` (a folder such as ``uploads``) last written more than ``age_s`` ago."""

        def scan() -> list[str]:
            folder, cutoff = self.path(prefix), time.time() - age_s
            if not folder.is_dir():
                return []
            return [
                f"{prefix}/{entry.name}"
                for entry in os.scandir(folder)
                if entry.is_file() and not entry.name.startswith(".") and entry.stat().st_mtime < cutoff
            ]

        return await asyncio.to_thread(scan)

    @staticmethod
    def _write_atomically(path: Path, data: bytes | BinaryIO) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        # Mode 0666 less the process umask (not mkstemp's 0600): an API and workers running as different users
        # share one store by their umask and group.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(descriptor, "wb") as file:
                if isinstance(data, bytes):
                    file.write(data)
                else:
                    shutil.copyfileobj(data, file, CHUNK_BYTES)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
