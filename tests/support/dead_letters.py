"""Dead letters put straight onto the DLQ topic, with headers as workers write them."""

from __future__ import annotations

import asyncio
import datetime as dt

from aiokafka import AIOKafkaProducer

from core.settings import Settings
from core.topics import ensure_topics
from tests.support.events import as_record, url_event

# Dead letters as workers wrote them before dlq.error.code existed: only the class, at its old module path.
HTTP_CLIENT_ERROR = b"consumer.fetch.HttpClientError"
PERMANENT_ERROR = b"consumer.errors.PermanentError"


def dlq_headers(
    error_class: bytes = HTTP_CLIENT_ERROR, failed_at: dt.datetime | None = None, redrives: int | None = None
) -> list[tuple[str, bytes]]:
    """Headers as the worker writes them, optionally from a dead letter that was redriven before."""
    at = (failed_at or dt.datetime.now(dt.UTC)).isoformat().encode()
    original = [("content-type", b"application/json")]
    if redrives is not None:
        original.append(("redrive.count", str(redrives).encode()))
    return [
        *original,
        ("dlq.error.class", error_class),
        ("dlq.error.message", b"it failed"),
        ("dlq.first_failure_at", at),
        ("dlq.last_failure_at", at),
        ("dlq.attempts", b"1"),
    ]


DeadLetter = tuple[bytes, bytes, list[tuple[str, bytes]]]


async def put_dead_letters(settings: Settings, letters: list[DeadLetter]) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        acks = [
            await producer.send(settings.dlq_topic, key=key, value=value, headers=headers)
            for key, value, headers in letters
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def synthetic_letters(count: int, error_class: bytes = HTTP_CLIENT_ERROR) -> list[DeadLetter]:
    letters = []
    for _ in range(count):
        key, value = as_record(url_event("http://images.example/a.png"))
        assert key is not None
        assert value is not None
        letters.append((key, value, dlq_headers(error_class)))
    return letters
