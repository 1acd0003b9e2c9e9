"""Every test image in one place: real PNGs (a pattern per seed, one colour, or noise), a truncated one, and
hand-built PNGs that declare more pixels than they carry."""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

from PIL import Image


def encoded(image: Image.Image, image_format: str = "PNG") -> bytes:
    """``image`` as the bytes of a file in ``image_format``."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def png_bytes(
    size: tuple[int, int] = (24, 16),
    *,
    seed: int = 0,
    color: tuple[int, int, int] | None = None,
    noise: bool = False,
) -> bytes:
    """An RGB PNG of ``size``: by default a pattern distinct per ``seed`` (so results can be compared with
    Pillow's own filters); all ``color``; or, with ``noise``, random pixels from ``seed`` that do not compress
    (its size on the wire is about width * height * 3)."""
    width, height = size
    if color is not None:
        return encoded(Image.new("RGB", size, color))
    if noise:
        return encoded(Image.frombytes("RGB", size, random.Random(seed).randbytes(width * height * 3)))
    image = Image.new("RGB", size)
    image.putdata(
        [
            ((seed * 37 + x * 11) % 256, (seed * 91 + y * 23) % 256, (x * y + seed) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    return encoded(image)


@functools.cache
def truncated_png() -> bytes:
    """The first half of a 256x256 noise PNG: a good header (it opens) whose pixel data ends early (it does not
    decode)."""
    data = png_bytes((256, 256), noise=True)
    return data[: len(data) // 2]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, *, depth: int = 1, rows: int | None = None) -> bytes:
    """A grayscale PNG of ``width`` x ``height`` whose first ``rows`` rows (all by default) are zeros."""
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\0" * ((width * depth + 7) // 8 + 1)
    data = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")
