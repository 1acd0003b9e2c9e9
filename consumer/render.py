"""Decode an untrusted image, apply a filter, encode PNG, and thumbnail both: the CPU-bound part of a job, run in
an executor.

Pillow is given only the allowed formats (never EPS, which would run Ghostscript) and its decompression-bomb
limit is an error; whatever the bytes do wrong, they will do again, so every failure here is permanent.

The image is decoded once for the result and both thumbnails, within the job's decode budget: the thumbnails
shrink the decoded source and the filtered result in place once the result is encoded, so they add no full-size
copy to what the filter already held.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps

from consumer.errors import PermanentError, describe
from consumer.filters import apply_filter, normalise_mode
from core.imaging import UnsupportedImage, open_image
from schemas import ErrorCode, FilterName

THUMBNAIL_SIDE_PX: Final = 256
THUMBNAIL_WEBP_QUALITY: Final = 80


class UnusableImage(PermanentError):
    """A format outside the allow-list, a disguised file, or more pixels than the decoder accepts."""

    code = ErrorCode.UNSUPPORTED_IMAGE


class CorruptImage(PermanentError):
    """An allowed format whose bytes do not decode (truncated, malformed)."""

    code = ErrorCode.CORRUPT_IMAGE


@dataclass(frozen=True, slots=True)
class Rendering:
    """A job's outputs: the result as PNG, and WEBP thumbnails (longest side at most 256 px) of source and result."""

    result_png: bytes
    source_thumbnail: bytes
    result_thumbnail: bytes


def render(data: bytes, filter_name: FilterName) -> Rendering:
    """Decode ``data`` as an allowed image, apply ``filter_name``, encode PNG, and thumbnail source and result.

    Raises :class:`UnusableImage` or :class:`CorruptImage`.
    """
    upright = _decode(data)
    result = apply_filter(filter_name, upright)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    # Result first: should a filter ever hand back its input, shrinking it is then still right for both.
    result_thumbnail = _thumbnail(result)
    return Rendering(buffer.getvalue(), _thumbnail(upright), result_thumbnail)


def _decode(data: bytes) -> Image.Image:
    """``data`` decoded and turned upright (EXIF orientation)."""
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
    return upright


def _thumbnail(image: Image.Image) -> bytes:
    """``image`` shrunk in place (the caller is done with it) to at most 256 px a side, as WEBP."""
    small = normalise_mode(image)  # WEBP takes L, LA, RGB(A); palette, CMYK and 16-bit images are converted
    small.thumbnail((THUMBNAIL_SIDE_PX, THUMBNAIL_SIDE_PX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=THUMBNAIL_WEBP_QUALITY)
    return buffer.getvalue()


def _check_pixels(image: Image.Image) -> None:
    """Refuse images above Pillow's limit once more, without relying on open_image's warning filter.

    That filter is process-global state which other threads of the executor may be changing at the same moment.
    """
    limit_px = Image.MAX_IMAGE_PIXELS
    if limit_px is not None and image.width * image.height > limit_px:
        raise UnsupportedImage(f"image has too many pixels ({image.width}x{image.height} > {limit_px})")
