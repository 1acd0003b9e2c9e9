"""The API app in-process: its lifespan running, reached through httpx without a socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from core.settings import Settings
from producer.app import create_app


@contextlib.asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API app with its lifespan running, reached through httpx without a socket."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield client
