"""The FastAPI application: wiring only (routers, lifespan, error handlers)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import ClientDisconnect

from core import tracing
from core.api_keys import ApiKeyStore
from core.blobs import open_blob_store
from core.consumer_group import GroupReader
from core.imaging import limit_pixels
from core.jobs import JobStore
from core.retention import RetentionStore
from core.schema import require_current
from core.settings import Settings
from producer import admin, asyncapi, batches, health, images
from producer.console import router as console
from producer.deps import Services
from producer.intake import JobIntake
from producer.metrics import ApiMetrics, Refusal
from producer.publisher import EventPublisher
from producer.rate_limits import RateLimiter
from producer.request_metrics import RequestMetricsMiddleware

logger = logging.getLogger(__name__)

UNTRACED_PATHS = ("/healthz", "/readyz", "/console/static/")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (read from the environment when not given)."""
    settings = settings or Settings()
    limit_pixels(settings.max_image_pixels)
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs = JobStore.from_url(settings.database_url)
        try:
            await require_current(jobs.engine)
        except BaseException:
            await jobs.close()
            raise
        blobs = open_blob_store(settings)
        publisher = EventPublisher(settings, metrics=metrics)
        await publisher.start()
        intake = JobIntake(settings, jobs, blobs, publisher, metrics=metrics)
        uploads = asyncio.Semaphore(settings.max_concurrent_uploads)
        group_reader = GroupReader(settings)
        lag_history = admin.lag_history(group_reader)  # samples only once an admin asks
        app.state.services = Services(
            settings=settings,
            jobs=jobs,
            retention=RetentionStore(jobs.engine),
            blobs=blobs,
            publisher=publisher,
            intake=intake,
            keys=ApiKeyStore(jobs.engine),
            rate_limiter=RateLimiter(settings.rate_limit),
            uploads=uploads,
            group_reader=group_reader,
            lag_history=lag_history,
            redrive_lock=asyncio.Lock(),
            metrics=metrics,
        )
        sweeper = asyncio.create_task(intake.sweep_orphan_uploads_forever(), name="orphan upload sweep")
        # What start-up made lives as long as the process: out of the collector's sight, full collections stay
        # short (they were the worst of the accept path's p99 under load).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            sweeper.cancel()
            await lag_history.stop()
            await group_reader.close()
            await intake.aclose()
            await publisher.stop()
            await jobs.close()

    app = FastAPI(
        title="Image pipeline API",
        summary="Accepts image jobs and appends them to a Kafka event log; workers process them later.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry request spans, only when this process traces (core/tracing.py): its hooks look
        # the global providers up on every request, about 5 % of an accept's CPU. Metrics are Prometheus's.
        telemetry={
            "tracing": tracing.enabled(),
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "exclude": _untraced,
        },
    )
    app.include_router(images.router)
    app.include_router(batches.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(asyncapi.router)
    console.install(app)
    app.state.metrics = metrics  # served apart from the API (producer/metrics_endpoint.py)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SQLAlchemyError, _dependency_unavailable)
    app.add_exception_handler(OSError, _dependency_unavailable)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    if settings.auth_disabled:
        _document_without_auth(app)
    return app


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    """Probes and static files: requests no one follows a job through."""
    return str(scope.get("path", "")).startswith(UNTRACED_PATHS)


def _document_without_auth(app: FastAPI) -> None:
    """With keys off, the OpenAPI document must not ask clients for one (fuzzers and clients believe it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.pop("security", None)
        schema.get("components", {}).pop("securitySchemes", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default handler echoes the input, which may be binary or huge; the message and location suffice.
    assert isinstance(exc, RequestValidationError)
    errors = [{key: error[key] for key in ("type", "loc", "msg") if key in error} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def _client_disconnected(request: Request, _exc: Exception) -> Response:
    # Nobody is left to answer; one line, not the ASGI traceback the exception would otherwise log.
    logger.info("%s %s: the client left before its request was read", request.method, request.url.path)
    return Response(status_code=400)


async def _dependency_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The database or the blob store failed: a condition that passes, so 503 and a retry, never a 500.
    logger.error("%s %s failed: %r", request.method, request.url.path, exc)
    services = request.app.state.services
    services.metrics.refused(Refusal.STORE_UNAVAILABLE)
    retry_after_s = services.settings.retry_after_s
    return JSONResponse(
        {"detail": f"the job store is unavailable; retry in {retry_after_s} s"},
        status_code=503,
        headers={"Retry-After": str(retry_after_s)},
    )
