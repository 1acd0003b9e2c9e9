"""The API app in-process: its lifespan running, reached through httpx without a socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from core.settings import Settings
from producer.app import create_app


@contextlib.asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API app with its lifespan running, reached through httpx without a socket."""
    async with running_api(settings) as (_app, client):
        yield client


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """:func:`api_client` and its app, for tests that look inside it (its metrics, its state)."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield app, client
