"""``image_process`` events and the records that carry them, built the way the API and the broker would."""

from __future__ import annotations

import hashlib
import uuid

from aiokafka import ConsumerRecord

from core.blobs import BlobStore
from core.jobs import utc_now
from schemas import BlobSource, DecodedEvent, FilterName, ImageProcessV1, UrlSource, encode_event

Record = tuple[bytes | None, bytes | None]
"""A record's key and value, as ``tests.support.worker.produce`` appends it."""


def url_event(
    url: str, image_filter: FilterName | str = FilterName.GRAYSCALE, image_id: uuid.UUID | None = None
) -> ImageProcessV1:
    return ImageProcessV1(
        event_id=uuid.uuid4(),
        image_id=image_id or uuid.uuid4(),
        source=UrlSource.model_validate({"url": url}),
        filter=FilterName(image_filter),
        requested_at=utc_now(),
    )


async def blob_event(blobs: BlobStore, data: bytes, image_filter: FilterName = FilterName.GRAYSCALE) -> ImageProcessV1:
    """An uploaded image, stored the way the API stores it."""
    image_id = uuid.uuid4()
    key = blobs.upload_key(str(image_id))
    await blobs.put(key, data)
    source = BlobSource(key=key, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    return ImageProcessV1(
        event_id=uuid.uuid4(), image_id=image_id, source=source, filter=image_filter, requested_at=utc_now()
    )


def as_record(event: DecodedEvent) -> Record:
    """The key and value a producer appends for ``event``."""
    return str(event.image_id).encode(), encode_event(event)


def make_record(value: bytes | None, *, key: bytes | None = None, offset: int = 7) -> ConsumerRecord:
    """A record as a consumer would receive it (``images``, partition 2), for feeding the handler directly."""
    return ConsumerRecord(
        topic="images",
        partition=2,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=[],
    )


def event_record(event: DecodedEvent) -> ConsumerRecord:
    key, value = as_record(event)
    return make_record(value, key=key)
