"""The bare endpoint: FastAPI answering ``POST /images`` with 202 and nothing else, the HTTP limit.

It neither reads nor validates the body and touches no broker or database, so image-api's throughput divided
by this one's is the share left after HTTP parsing, routing and uvicorn, which both pay alike. Served by
:func:`scripts.bench.servers.bare_server` with image-api's uvicorn options.
"""

from __future__ import annotations

from fastapi import FastAPI, Response

app = FastAPI(title="bench: bare endpoint", openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/images", status_code=202)
async def accept() -> Response:
    return Response(status_code=202)


@app.get("/healthz")
async def healthz() -> Response:
    return Response(status_code=200)
