"""Draw the console's filter previews: one small scene, through each filter, into producer/console/static/filters.

The API serves them as static files: it does not apply filters itself (that is the workers' code, and the
producer never imports the consumer). Run ``python -m scripts.console_previews`` after changing a filter;
tests/console/test_previews.py fails while a preview differs from what the filter now draws.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from consumer.filters import apply_filter
from schemas import FilterName

PREVIEWS = Path(__file__).resolve().parent.parent / "producer" / "console" / "static" / "filters"
SIZE_PX = (160, 112)


def sample_scene() -> Image.Image:
    """A little landscape with flat colours, gradients and hard edges: every filter shows on it."""
    width, height = SIZE_PX
    scene = Image.new("RGB", SIZE_PX)
    draw = ImageDraw.Draw(scene)
    for y in range(height):  # sky, lighter towards the horizon
        shade = y / height
        draw.line([(0, y), (width, y)], fill=(int(70 + 120 * shade), int(130 + 90 * shade), 235))
    draw.ellipse([112, 14, 140, 42], fill=(255, 204, 64))
    draw.polygon([(0, 82), (46, 48), (96, 84)], fill=(74, 120, 84))
    draw.polygon([(54, 86), (112, 52), (160, 86)], fill=(56, 98, 70))
    draw.rectangle([0, 84, width, height], fill=(94, 160, 72))
    draw.rectangle([22, 66, 58, 94], fill=(196, 72, 52))
    draw.polygon([(18, 68), (40, 50), (62, 68)], fill=(120, 52, 40))
    draw.rectangle([35, 80, 45, 94], fill=(60, 40, 30))
    return scene


def preview_png(name: FilterName) -> bytes:
    """The sample scene through filter ``name``, as PNG bytes."""
    buffer = io.BytesIO()
    apply_filter(name, sample_scene()).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def preview_path(name: FilterName) -> Path:
    return PREVIEWS / f"{name.value}.png"


def main() -> int:
    PREVIEWS.mkdir(parents=True, exist_ok=True)
    for name in FilterName:
        preview_path(name).write_bytes(preview_png(name))
        print(preview_path(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
