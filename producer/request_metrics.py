"""Counting and timing every HTTP request by its route template, as a pure ASGI middleware.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, which runs the app in a task of its own and wraps the
body in a stream: a cost on every request of the tuned accept path. This one only wraps ``send`` to read the status.
The label is the route's template (``/images/{image_id}``), read from ``scope["route"]`` once the router matched
it, never the raw path: one series per route, whatever ids clients send. A path no route matches is
``unmatched``.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.metrics import UNMATCHED_ROUTE, ApiMetrics

# Answered when the app raised before starting its answer: Starlette's outermost middleware then sends a 500.
_STATUS_WHEN_UNANSWERED = 500


class RequestMetricsMiddleware:
    """Counts each HTTP request by method, route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = _STATUS_WHEN_UNANSWERED

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.metrics.request_answered(scope["method"], route_template(scope), status, time.perf_counter() - started)


def route_template(scope: MutableMapping[str, Any]) -> str:
    """The template of the route the router chose for ``scope`` (its ``path_format``), or ``unmatched``."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED_ROUTE
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED_ROUTE
