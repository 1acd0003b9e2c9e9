"""The blob store: uploaded images and processed results, as files under one root folder.

Kafka carries references, never image bytes. Keys are deterministic per image (``uploads/<id>``,
``results/<id>.png``), so a re-run overwrites instead of piling up copies, and every write is atomic
(a temporary file renamed into place), so a reader never sees half an image.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path


class BlobStore:
    """Files under ``root``, addressed by relative keys that can never escape it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @staticmethod
    def upload_key(image_id: str) -> str:
        return f"uploads/{image_id}"

    @staticmethod
    def result_key(image_id: str) -> str:
        return f"results/{image_id}.png"

    def path(self, key: str) -> Path:
        """The file behind ``key``; a key that would leave the root raises ``ValueError``."""
        # Lexical normalisation, no file-system calls: the root is resolved once, and only this code writes below it.
        path = Path(os.path.normpath(self.root / key))
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"blob key {key!r} is outside the store")
        return path

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write_atomically, self.path(key), data)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self.path(key).read_bytes)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
