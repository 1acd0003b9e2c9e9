"""``GET /asyncapi.json``: the contract of the records behind this API, with the topic names it runs with.

Open like ``/openapi.json``: it names topics and fields, no data. Left out of the OpenAPI document, as that one is.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from producer.deps import ServicesDep
from schemas.asyncapi import asyncapi_document

router = APIRouter(include_in_schema=False)


@router.get("/asyncapi.json")
async def asyncapi(services: ServicesDep) -> JSONResponse:
    """The AsyncAPI 3.0.0 document of the main and the dead-letter topic (a few ms to build: not cached)."""
    return JSONResponse(asyncapi_document(services.settings))
