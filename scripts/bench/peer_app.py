"""The peer endpoint: what a Python user would write instead of image-api, FastAPI publishing via FastStream.

``POST /images`` validates the same body model as image-api (:class:`producer.models.ImageJobRequest`), builds the
same event, publishes it keyed by a new image id through FastStream's ``KafkaBroker`` with image-api's producer
settings (acks=all, idempotence, linger_ms=5), waits for the broker's ack and answers 202. It writes no job row,
takes no Idempotency-Key, has no auth or rate limit, and publishes without a transaction, so a timed-out send may
still land after its 503. Settings come from ``KAFKA_BOOTSTRAP_SERVERS`` and ``IMAGES_TOPIC``.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from faststream.kafka import KafkaBroker

from producer.models import ImageJobRequest
from schemas import ImageProcessEvent, UrlSource, encode_event, event_headers

TOPIC = os.environ.get("IMAGES_TOPIC", "images")
broker = KafkaBroker(
    os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
    acks="all",
    enable_idempotence=True,
    linger_ms=5,
    log_level=30,
)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    await broker.start()
    try:
        yield
    finally:
        await broker.stop()


app = FastAPI(title="bench: FastStream peer", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)


@app.post("/images", status_code=202)
async def submit(body: ImageJobRequest) -> dict[str, str]:
    image_id = uuid.uuid4()
    event = ImageProcessEvent(
        event_id=uuid.uuid4(),
        image_id=image_id,
        source=UrlSource(url=body.url),
        filter=body.filter,
        requested_at=dt.datetime.now(dt.UTC),
    )
    headers = {name: value.decode() for name, value in event_headers(event)}
    await broker.publish(encode_event(event), TOPIC, key=str(image_id).encode(), headers=headers)
    return {"id": str(image_id), "status_url": f"/images/{image_id}"}


@app.get("/healthz")
async def healthz() -> Response:
    return Response(status_code=200)
