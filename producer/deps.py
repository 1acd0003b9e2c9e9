"""What the route functions need, handed over by FastAPI's dependency injection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from core.api_keys import ApiKeyStore
from core.blobs import BlobStore
from core.jobs import JobStore
from core.settings import Settings
from producer.intake import JobIntake
from producer.publisher import EventPublisher
from producer.rate_limits import RateLimiter


@dataclass(frozen=True, slots=True)
class Services:
    """The long-lived objects the lifespan builds once per process."""

    settings: Settings
    jobs: JobStore
    blobs: BlobStore
    publisher: EventPublisher
    intake: JobIntake
    keys: ApiKeyStore
    rate_limiter: RateLimiter
    uploads: asyncio.Semaphore  # uploads being read at once: each holds up to MAX_UPLOAD_BYTES in memory


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
