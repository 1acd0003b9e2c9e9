"""The names of the filters a client may ask for; the worker holds one implementation per name."""

from __future__ import annotations

from enum import StrEnum


class FilterName(StrEnum):
    """A filter the pipeline applies. The value is what clients send and what events carry."""

    GRAYSCALE = "grayscale"
    SEPIA = "sepia"
    INVERT = "invert"
    BLUR = "blur"
    SHARPEN = "sharpen"
    EDGE_ENHANCE = "edge_enhance"
    EMBOSS = "emboss"
    CONTOUR = "contour"
    THUMBNAIL = "thumbnail"
