"""Starting and stopping aiokafka clients so that none is left open.

A client whose ``start()`` failed still has to be stopped (aiokafka complains about it at exit otherwise), and
stopping needs a deadline: an idempotent producer's ``stop()`` flushes, which can wait forever for an absent
broker (aiokafka issue #1101).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from core.logs import KAFKA_TROUBLE
from core.settings import Settings

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0

Client = TypeVar("Client", AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaAdminClient)


class KafkaUnavailable(Exception):
    """Kafka refused, failed or did not answer in time: try again later (the API answers 503 with Retry-After)."""


@contextlib.asynccontextmanager
async def kafka_deadline(settings: Settings, timeout_s: float, what: str) -> AsyncIterator[None]:
    """Bound the block by ``timeout_s``; a timeout or a Kafka or network error in it is :class:`KafkaUnavailable`
    saying ``what`` failed, so callers (the admin API) have one exception to map instead of aiokafka's many."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        raise KafkaUnavailable(
            f"Kafka at {settings.kafka_bootstrap_servers} did not answer within {timeout_s:g} s while {what}"
        ) from None
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"{what} failed: {one_line(exc)}") from exc


@contextlib.asynccontextmanager
async def running(client: Client, *, stop_timeout_s: float = STOP_TIMEOUT_S) -> AsyncIterator[Client]:
    """Start ``client`` for the block; it is stopped afterwards, also when starting failed."""
    try:
        await client.start()
        yield client
    finally:
        await stop_within(client, stop_timeout_s)


async def stop_within(client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient, timeout_s: float) -> None:
    """Stop ``client``, giving up (with a warning) after ``timeout_s``; errors while stopping are only logged."""
    try:
        async with asyncio.timeout(timeout_s):
            if isinstance(client, AIOKafkaAdminClient):
                await client.close()
            else:
                await client.stop()
    except TimeoutError:
        logger.warning("%s did not stop within %s s", type(client).__name__, timeout_s, extra=KAFKA_TROUBLE)
    except (KafkaError, OSError) as exc:
        logger.warning("%s stopped with an error: %r", type(client).__name__, exc, extra=KAFKA_TROUBLE)


def one_line(error: BaseException) -> str:
    """``ErrorClass: message`` on one line; aiokafka's errors already begin with their class name."""
    name, text = type(error).__name__, " ".join(str(error).split())
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"
