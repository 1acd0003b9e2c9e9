"""The image filters, one pure function per :class:`schemas.FilterName`, kept in a small registry.

Adding a filter is writing one function decorated with ``@image_filter(FilterName.X)``: the worker looks filters
up by the name the event carries, and a test checks that every name has exactly one function. Filters get an
image of any mode Pillow can open and normalise it first (:func:`normalise_mode`), so each one only deals with
L, LA, RGB or RGBA; alpha is kept, so a transparent PNG stays transparent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from PIL import Image, ImageFilter, ImageOps

from schemas import FilterName

FilterFunction = Callable[[Image.Image], Image.Image]

THUMBNAIL_SIZE_PX: Final = (256, 256)
BLUR_RADIUS_PX: Final = 2.0

# Microsoft's sepia matrix, rows R, G, B; Pillow clips the results to 0..255.
_SEPIA_MATRIX: Final = (0.393, 0.769, 0.189, 0.0, 0.349, 0.686, 0.168, 0.0, 0.272, 0.534, 0.131, 0.0)
_BASE_MODES: Final = frozenset({"L", "LA", "RGB", "RGBA"})
_MAX_8BIT: Final = 255

_registry: dict[FilterName, FilterFunction] = {}


class UnknownFilter(LookupError):
    """No filter is registered under the requested name."""


def image_filter(name: FilterName) -> Callable[[FilterFunction], FilterFunction]:
    """Register the decorated function as the implementation of ``name`` (exactly one per name)."""

    def register(function: FilterFunction) -> FilterFunction:
        if name in _registry:
            raise ValueError(f"filter {name.value!r} is already registered")
        _registry[name] = function
        return function

    return register


def registered_filters() -> frozenset[FilterName]:
    """The names that have an implementation."""
    return frozenset(_registry)


def apply_filter(name: FilterName | str, image: Image.Image) -> Image.Image:
    """``image`` with the filter ``name`` applied; the input is never modified."""
    try:
        function = _registry[FilterName(name)]
    except (ValueError, KeyError) as exc:
        raise UnknownFilter(f"no filter named {str(name)!r}") from exc
    return function(image)


def normalise_mode(image: Image.Image) -> Image.Image:
    """``image`` as L, LA, RGB or RGBA: the modes every filter (and PNG) handles.

    Palette images become RGB(A) (keeping transparency), bilevel becomes L, CMYK/YCbCr/LAB/HSV become RGB, and
    16/32-bit integer or float greys are scaled down to 8 bits instead of being clipped (Pillow's plain
    ``convert("L")`` turns every 16-bit value above 255 white).
    """
    mode = image.mode
    if mode in _BASE_MODES:
        return image
    if mode in ("1", "La"):
        return image.convert("L" if mode == "1" else "LA")
    if mode.startswith(("I", "F")):
        return _scale_to_8bit(image)
    # has_transparency_data covers alpha bands and a palette's transparent entry (not LAB's "A" colour band).
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """A single-band 16/32-bit or float image as 8-bit L: 16-bit data divided by 256, other ranges stretched."""
    wide = image.convert("F")
    low, high = wide.getextrema()
    assert isinstance(low, float | int), "single-band image"
    assert isinstance(high, float | int), "single-band image"
    if image.mode.startswith("I;16") or (low >= 0 and high <= 0xFFFF and high > _MAX_8BIT):
        scale, offset = 1 / 256, 0.0
    elif low >= 0 and high <= _MAX_8BIT:
        scale, offset = 1.0, 0.0
    else:
        scale = _MAX_8BIT / (high - low) if high > low else 0.0
        offset = -low * scale
    return wide.point(lambda value: value * scale + offset).convert("L")


def _split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The colour part (L or RGB) of a normalised image and its alpha band, if any."""
    if image.mode in ("LA", "RGBA"):
        return image.convert(image.mode[:-1]), image.getchannel("A")
    return image, None


def _with_alpha(colour: Image.Image, alpha: Image.Image | None) -> Image.Image:
    if alpha is None:
        return colour
    result = colour.convert("LA" if colour.mode == "L" else "RGBA")
    result.putalpha(alpha)
    return result


def _colour_only(image: Image.Image, operation: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Apply ``operation`` to the colour bands and keep the alpha band as it was."""
    colour, alpha = _split_alpha(normalise_mode(image))
    return _with_alpha(operation(colour), alpha)


@image_filter(FilterName.GRAYSCALE)
def grayscale(image: Image.Image) -> Image.Image:
    """Luma (ITU-R 601-2), exactly Pillow's ``convert("L")``; alpha is kept (LA)."""
    return _colour_only(image, lambda colour: colour.convert("L"))


@image_filter(FilterName.SEPIA)
def sepia(image: Image.Image) -> Image.Image:
    """The warm brown tone of old photographs."""
    return _colour_only(image, lambda colour: colour.convert("RGB").convert("RGB", _SEPIA_MATRIX))


@image_filter(FilterName.INVERT)
def invert(image: Image.Image) -> Image.Image:
    """The negative of the colours; transparency is not inverted."""
    return _colour_only(image, ImageOps.invert)


@image_filter(FilterName.BLUR)
def blur(image: Image.Image) -> Image.Image:
    """A Gaussian blur, on premultiplied alpha so transparent pixels' hidden colour does not bleed in as a halo."""
    normalised = normalise_mode(image)
    gaussian = ImageFilter.GaussianBlur(BLUR_RADIUS_PX)
    if normalised.mode in ("LA", "RGBA"):
        premultiplied = normalised.convert(normalised.mode[:-1] + "a")
        return premultiplied.filter(gaussian).convert(normalised.mode)
    return normalised.filter(gaussian)


@image_filter(FilterName.SHARPEN)
def sharpen(image: Image.Image) -> Image.Image:
    """Pillow's 3x3 sharpening kernel."""
    return _colour_only(image, lambda colour: colour.filter(ImageFilter.SHARPEN))


@image_filter(FilterName.EDGE_ENHANCE)
def edge_enhance(image: Image.Image) -> Image.Image:
    """Pillow's edge-enhancing kernel."""
    return _colour_only(image, lambda colour: colour.filter(ImageFilter.EDGE_ENHANCE))


@image_filter(FilterName.EMBOSS)
def emboss(image: Image.Image) -> Image.Image:
    """Pillow's emboss kernel (a grey relief)."""
    return _colour_only(image, lambda colour: colour.filter(ImageFilter.EMBOSS))


@image_filter(FilterName.CONTOUR)
def contour(image: Image.Image) -> Image.Image:
    """Pillow's contour kernel (dark outlines on white)."""
    return _colour_only(image, lambda colour: colour.filter(ImageFilter.CONTOUR))


@image_filter(FilterName.THUMBNAIL)
def thumbnail(image: Image.Image) -> Image.Image:
    """At most ``THUMBNAIL_SIZE_PX``, aspect ratio kept; smaller images are left at their size."""
    result = normalise_mode(image).copy()
    result.thumbnail(THUMBNAIL_SIZE_PX, Image.Resampling.LANCZOS)
    return result
