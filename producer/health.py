"""Liveness and readiness probes for orchestrators and load balancers."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from producer.deps import ServicesDep
from producer.models import Readiness
from producer.publisher import BrokerUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The broker and the database answer",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency does not answer."}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    broker, database = await asyncio.gather(_broker_state(services), _database_state(services))
    ready = broker == database == "ok"
    return JSONResponse(Readiness(broker=broker, database=database).model_dump(), status_code=200 if ready else 503)


async def _broker_state(services: ServicesDep) -> str:
    try:
        await services.publisher.check()
    except BrokerUnavailable as exc:
        return f"unavailable: {exc}"
    return "ok"


async def _database_state(services: ServicesDep) -> str:
    try:
        async with asyncio.timeout(services.settings.send_timeout_s):
            await services.jobs.ping()
    except Exception as exc:  # any driver error means "not ready"; the text tells the operator which
        return f"unavailable: {exc!r}"
    return "ok"
