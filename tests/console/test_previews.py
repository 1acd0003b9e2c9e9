"""The submit form's filter previews are what the filters draw today (redraw: python -m scripts.console_previews)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from schemas import FilterName
from scripts.console_previews import SIZE_PX, preview_path, preview_png


@pytest.mark.parametrize("name", list(FilterName))
def test_each_filter_has_a_current_preview(name: FilterName) -> None:
    stored = Image.open(preview_path(name))
    drawn = Image.open(io.BytesIO(preview_png(name)))
    assert stored.size == drawn.size
    assert stored.size[0] <= SIZE_PX[0]
    difference = ImageChops.difference(stored.convert("RGBA"), drawn.convert("RGBA")).getbbox()
    assert difference is None, f"{name.value}'s preview is stale: run python -m scripts.console_previews"
