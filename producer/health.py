"""Liveness and readiness probes for orchestrators and load balancers."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from core.api_keys import Role
from producer.auth import MaybePrincipal
from producer.deps import ServicesDep
from producer.metrics import Refusal
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
async def readyz(services: ServicesDep, principal: MaybePrincipal) -> JSONResponse:
    """Whether to send traffic here; why not is told only to an admin key (the reasons name internal addresses)."""
    broker, database = await asyncio.gather(_broker_state(services), _database_state(services))
    ready = broker == database == "ok"
    if not ready:
        services.metrics.refused(Refusal.NOT_READY)
    if principal is None or Role.ADMIN not in principal.roles:
        broker, database = (_summary(broker), _summary(database))
    return JSONResponse(Readiness(broker=broker, database=database).model_dump(), status_code=200 if ready else 503)


def _summary(state: str) -> str:
    return "ok" if state == "ok" else "unavailable"


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
