"""What the pipeline accepts as an image, decided the same way at the API and in the workers.

Pillow recognises a file by its magic bytes, not its name or MIME type, and some of its plug-ins run external
programs (EPS through Ghostscript): only the formats in ``ALLOWED_IMAGE_FORMATS`` are ever opened. Pixel
counts above Pillow's decompression-bomb limit are errors here, not warnings.
"""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO, Final

from PIL import Image, UnidentifiedImageError

# Pillow's format names, each with the media type clients send it as.
IMAGE_MEDIA_TYPES: Final = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
ALLOWED_IMAGE_FORMATS: Final = tuple(IMAGE_MEDIA_TYPES)
UNKNOWN_MEDIA_TYPE: Final = "application/octet-stream"
# Each format's magic bytes (at offset 0, and WEBP's second part at offset 8), to name stored originals' type.
_MAGIC: Final = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


# A filter's working copies (decoded, converted, filtered, premultiplied...): measured peaks were 4.2 to 4.5 times
# the decoded size for blur and sepia; 5 leaves room.
WORKING_COPIES: Final = 5


class UnsupportedImage(ValueError):
    """The bytes are not an image of an allowed format, or the image is too large to decode safely."""


def open_image(data: bytes | BinaryIO) -> Image.Image:
    """Open ``data`` (bytes or a binary file) lazily, header only, as an allowed format within the pixel limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data, formats=ALLOWED_IMAGE_FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UnsupportedImage(f"image has too many pixels: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        allowed = ", ".join(ALLOWED_IMAGE_FORMATS)
        raise UnsupportedImage(f"not an image in an accepted format ({allowed})") from exc
    return image


def sniff_media_type(head: bytes) -> str:
    """The media type of an image in an allowed format from its first bytes (12 suffice), else
    ``application/octet-stream``: stored blobs carry no type of their own."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return IMAGE_MEDIA_TYPES["WEBP"]
    for magic, image_format in _MAGIC:
        if head.startswith(magic):
            return IMAGE_MEDIA_TYPES[image_format]
    return UNKNOWN_MEDIA_TYPE


def decode_cost_bytes(image: Image.Image) -> int:
    """The memory decoding and filtering ``image`` may take at its peak, from its header alone."""
    return image.width * image.height * max(3, len(image.getbands())) * WORKING_COPIES


def limit_pixels(max_image_pixels: int) -> None:
    """Set Pillow's decompression-bomb limit (process-wide, so only entry points call this)."""
    Image.MAX_IMAGE_PIXELS = max_image_pixels
