"""Rendering console pages: Jinja2 with autoescaping, and the headers every page carries.

Nothing a user typed can become markup: every value goes through Jinja2's escaping, no template marks a value
safe, and the Content-Security-Policy allows scripts, styles and images from this origin only (no inline
script or style), so even an escaping mistake could not run code.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from producer.console.session import csrf_token, keep_csrf_token

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",  # blob: previews a chosen file before it is uploaded
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,  # a misspelt name fails the test that renders it, not silently blank
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(request: Request, template: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    """The page ``template`` filled with ``context`` (plus the request and the CSRF token)."""
    html = _environment.get_template(template).render(request=request, csrf=csrf_token(request), **context)
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    keep_csrf_token(request, response)
    return response


def _when(value: dt.datetime | None) -> str:
    """A timestamp as the console shows it: UTC, to the second."""
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _took(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """The time between two timestamps, in the unit that reads best."""
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


_environment.filters["when"] = _when
_environment.globals["took"] = _took
