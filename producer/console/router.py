"""The console's routes and static files, mounted under ``/console`` and left out of the OpenAPI document."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from producer.console import operations, pages
from producer.console.rendering import STATIC


def install(app: FastAPI) -> None:
    """Serve the console from ``app``."""
    app.include_router(pages.router)
    app.include_router(operations.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
