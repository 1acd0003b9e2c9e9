"""Decode an untrusted image, apply a filter, encode PNG: the CPU-bound part of a job, run in an executor.

Pillow is given only the allowed formats (never EPS, which would run Ghostscript) and its decompression-bomb
limit is an error; whatever the bytes do wrong, they will do again, so every failure here is permanent.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from consumer.errors import PermanentError, describe
from consumer.filters import apply_filter
from core.imaging import UnsupportedImage, open_image
from schemas import ErrorCode, FilterName


class UnusableImage(PermanentError):
    """A format outside the allow-list, a disguised file, or more pixels than the decoder accepts."""

    code = ErrorCode.UNSUPPORTED_IMAGE


class CorruptImage(PermanentError):
    """An allowed format whose bytes do not decode (truncated, malformed)."""

    code = ErrorCode.CORRUPT_IMAGE


def render_png(data: bytes, filter_name: FilterName) -> bytes:
    """Decode ``data`` as an allowed image, apply ``filter_name`` and encode PNG.

    Raises :class:`UnusableImage` or :class:`CorruptImage`.
    """
    try:
        image = open_image(data)
        _check_pixels(image)
        image.load()
        upright = ImageOps.exif_transpose(image)
    except UnsupportedImage as exc:
        raise UnusableImage(f"cannot use the image: {exc}") from exc
    except Exception as exc:
        # Pillow's decoders raise many types on malformed input (OSError for truncation, SyntaxError, ValueError,
        # struct.error, IndexError, ...): whatever the bytes did, they will do it again.
        raise CorruptImage(f"cannot decode the image: {describe(exc)}") from exc
    result = apply_filter(filter_name, upright)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    return buffer.getvalue()


def _check_pixels(image: Image.Image) -> None:
    """Refuse images above Pillow's limit once more, without relying on open_image's warning filter.

    That filter is process-global state which other threads of the executor may be changing at the same moment.
    """
    limit_px = Image.MAX_IMAGE_PIXELS
    if limit_px is not None and image.width * image.height > limit_px:
        raise UnsupportedImage(f"image has too many pixels ({image.width}x{image.height} > {limit_px})")
