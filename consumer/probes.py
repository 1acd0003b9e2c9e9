"""The worker's HTTP side: Prometheus ``/metrics`` and a ``/livez`` that fails when the consumer is stuck."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consumer.worker import Worker


def probes_app(worker: Worker) -> Starlette:
    async def livez(_request: Request) -> JSONResponse:
        problems = worker.liveness.problems()
        return JSONResponse({"alive": not problems, "problems": problems}, status_code=503 if problems else 200)

    async def metrics(_request: Request) -> Response:
        # At its exact path: a mount would answer 307 to /metrics/, which a scraper without redirects misses.
        return Response(generate_latest(worker.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/livez", livez), Route("/metrics", metrics)])


class _ProbeServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the worker owns SIGTERM and SIGINT: a probe server must not take them over


@contextlib.asynccontextmanager
async def serve_probes(worker: Worker, port: int, host: str) -> AsyncIterator[None]:
    """Serve the probes on ``host:port`` for the duration of the block."""
    server = _ProbeServer(uvicorn.Config(probes_app(worker), host=host, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        yield
    finally:
        server.should_exit = True
        await task
