"""Building ``image_process`` records the way the API and the broker would, for the worker's tests."""

from __future__ import annotations

import hashlib
import io
import uuid

from aiokafka import ConsumerRecord
from PIL import Image

from core.blobs import BlobStore
from core.jobs import utc_now
from schemas import BlobSource, FilterName, ImageProcessV1, UrlSource, encode_event


def png_bytes(size: tuple[int, int] = (32, 24), mode: str = "RGB") -> bytes:
    image = Image.new(mode, size)
    image.putdata([((x * 8) % 256, (y * 10) % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_record(value: bytes | None, *, key: bytes | None = None, offset: int = 7) -> ConsumerRecord:
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


def event_record(event: ImageProcessV1) -> ConsumerRecord:
    return make_record(encode_event(event), key=str(event.image_id).encode())


def url_event(url: str, image_filter: FilterName = FilterName.GRAYSCALE) -> ImageProcessV1:
    return ImageProcessV1(
        event_id=uuid.uuid4(),
        image_id=uuid.uuid4(),
        source=UrlSource.model_validate({"url": url}),
        filter=image_filter,
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
