"""What the route functions need, handed over by FastAPI's dependency injection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from core.api_keys import ApiKeyStore
from core.blobs import BlobStore
from core.consumer_group import GroupReader
from core.jobs import JobStore
from core.lag_history import LagHistory
from core.retention import RetentionStore
from core.settings import Settings
from producer.intake import JobIntake
from producer.metrics import ApiMetrics
from producer.publisher import EventPublisher
from producer.rate_limits import RateLimiter


@dataclass(frozen=True, slots=True)
class Services:
    """The long-lived objects the lifespan builds once per process."""

    settings: Settings
    jobs: JobStore
    retention: RetentionStore  # tombstones of expired jobs: 410 rather than 404
    blobs: BlobStore
    publisher: EventPublisher
    intake: JobIntake
    keys: ApiKeyStore
    rate_limiter: RateLimiter
    uploads: asyncio.Semaphore  # uploads taken at once (MAX_CONCURRENT_UPLOADS): each spooled to a file
    group_reader: GroupReader  # the workers' group, for the admin routes (clients kept open between looks)
    lag_history: LagHistory  # the workers' lag, sampled while an admin looks (producer/admin.py)
    redrive_lock: asyncio.Lock  # one redrive at a time in this process (producer/admin.py)
    metrics: ApiMetrics  # the registry served on API_METRICS_PORT (producer/metrics.py)


def get_services(request: Request) -> Services:
    """The process's services, for code that has the request at hand."""
    services: Services = request.app.state.services
    return services


async def _services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop on every request.
    return get_services(request)


ServicesDep = Annotated[Services, Depends(_services)]
