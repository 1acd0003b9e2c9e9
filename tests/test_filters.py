"""The filter registry: one filter per name, every mode Pillow opens handled, alpha kept, inputs untouched."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from consumer.filters import (
    THUMBNAIL_SIZE_PX,
    UnknownFilter,
    apply_filter,
    image_filter,
    normalise_mode,
    registered_filters,
)
from schemas import FilterName
from tests.support.images import encoded

ALPHA_KEEPING = [name for name in FilterName if name is not FilterName.BLUR and name is not FilterName.THUMBNAIL]


def gradient(mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A deterministic image with detail in every band, so filters have something to change."""
    width, height = size
    red = Image.linear_gradient("L").resize(size)
    green = red.rotate(90).resize(size)
    blue = Image.new("L", size)
    blue.putdata([(x * 7 + y * 13) % 256 for y in range(height) for x in range(width)])
    alpha = Image.new("L", size)
    alpha.putdata([255 if (x // 5 + y // 5) % 2 else 64 for y in range(height) for x in range(width)])
    rgba = Image.merge("RGBA", (red, green, blue, alpha))
    return rgba if mode == "RGBA" else rgba.convert(mode)


def sample(mode: str) -> Image.Image:
    if mode.startswith("P") and mode != "PA":
        image = gradient("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        if mode == "P+transparency":
            image.info["transparency"] = 0
        return image
    if mode.startswith("I;16"):
        return Image.new(mode, (20, 10), 60000)
    if mode in ("I", "F"):
        return gradient("L").convert(mode).point(lambda value: value * 200)
    return gradient(mode)


def png_round_trip(image: Image.Image) -> Image.Image:
    return Image.open(io.BytesIO(encoded(image)))


def test_every_filter_name_has_exactly_one_implementation() -> None:
    assert registered_filters() == frozenset(FilterName)


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        image_filter(FilterName.GRAYSCALE)(lambda image: image)


def test_unknown_filter() -> None:
    with pytest.raises(UnknownFilter, match="'posterize'"):
        apply_filter("posterize", gradient())


def test_grayscale_is_pillows_own_conversion_for_rgb() -> None:
    image = gradient("RGB")

    result = apply_filter(FilterName.GRAYSCALE, image)

    assert result.mode == "L"
    assert result.tobytes() == image.convert("L").tobytes()


def test_grayscale_of_a_grey_image_is_unchanged() -> None:
    image = gradient("L")
    assert apply_filter("grayscale", image).tobytes() == image.tobytes()


@pytest.mark.parametrize("name", list(FilterName))
@pytest.mark.parametrize(
    "mode",
    [
        "RGB",
        "RGBA",
        "L",
        "LA",
        "P",
        "P+transparency",
        "1",
        "CMYK",
        "YCbCr",
        "LAB",
        "PA",
        "La",
        "RGBa",
        "I;16",
        "I;16B",
        "I",
        "F",
    ],
)
def test_every_filter_handles_every_mode(name: FilterName, mode: str) -> None:
    image = sample(mode)
    before = image.tobytes()

    result = apply_filter(name, image)

    assert result.mode in ("L", "LA", "RGB", "RGBA")
    assert png_round_trip(result).size == result.size
    assert image.tobytes() == before, "the input is never modified"
    if name is not FilterName.THUMBNAIL:
        assert result.size == image.size


@pytest.mark.parametrize("name", ALPHA_KEEPING)
def test_alpha_is_kept_as_it_was(name: FilterName) -> None:
    image = gradient("RGBA")

    result = apply_filter(name, image)

    assert result.mode.endswith("A")
    assert result.getchannel("A").tobytes() == image.getchannel("A").tobytes()


@pytest.mark.parametrize(("mode", "expected"), [("P+transparency", "RGBA"), ("P", "RGB"), ("LAB", "RGB"), ("La", "LA")])
def test_transparency_becomes_an_alpha_band(mode: str, expected: str) -> None:
    assert apply_filter(FilterName.INVERT, sample(mode)).mode == expected


def test_invert_inverts_colour_not_alpha() -> None:
    image = Image.new("RGBA", (2, 2), (10, 20, 30, 40))
    assert apply_filter(FilterName.INVERT, image).getpixel((0, 0)) == (245, 235, 225, 40)


def test_sepia_tints_brown() -> None:
    red, green, blue = apply_filter(FilterName.SEPIA, Image.new("RGB", (1, 1), (128, 128, 128))).getpixel((0, 0))  # type: ignore[misc]
    assert red > green > blue


def test_blur_does_not_bleed_hidden_colour_of_transparent_pixels() -> None:
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # transparent black around ...
    image.paste((255, 255, 255, 255), (5, 5, 15, 15))  # ... an opaque white square
    red, _, _, alpha = apply_filter(FilterName.BLUR, image).getpixel((4, 10))  # type: ignore[misc]
    assert 0 < alpha < 255
    assert red >= 250, "premultiplied: the soft edge stays white instead of going grey"


def test_blur_softens_edges() -> None:
    image = Image.new("L", (20, 20), 0)
    image.paste(255, (10, 0, 20, 20))
    blurred = apply_filter(FilterName.BLUR, image)
    assert 0 < blurred.getpixel((9, 10)) < 255  # type: ignore[operator]
    assert ImageChops.difference(blurred, image).getbbox() is not None


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1000, 500), (256, 128)), ((300, 900), (85, 256)), ((100, 50), (100, 50))],
)
def test_thumbnail_fits_in_the_box_keeping_the_aspect_ratio(size: tuple[int, int], expected: tuple[int, int]) -> None:
    result = apply_filter(FilterName.THUMBNAIL, gradient("RGB", size))
    assert result.size == expected
    assert max(result.size) <= max(THUMBNAIL_SIZE_PX)


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (2, 2), 60000)
    assert normalise_mode(image).getpixel((0, 0)) == 60000 // 256


def test_float_grey_is_stretched_to_8_bits() -> None:
    image = Image.new("F", (2, 1))
    image.putdata([-1.0, 1.0])
    assert list(normalise_mode(image).get_flattened_data()) == [0, 255]


def test_tiny_images_survive_kernel_filters() -> None:
    for name in FilterName:
        assert apply_filter(name, Image.new("RGB", (1, 1), (1, 2, 3))).size == (1, 1)
