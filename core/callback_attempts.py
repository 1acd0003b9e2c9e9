"""The log of completion-callback POSTs: one row per attempt, in the job database.

It is both what ``GET /images/{id}`` shows and the callback consumer's memory: a delivery with a delivered row is
skipped when its record comes again (a redelivery after a rebalance or a crash, or the same callback appended twice),
and attempts are counted across redeliveries, so a callback is POSTed at most ``CALLBACK_MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Integer, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.tables import callback_attempts_table

_T = callback_attempts_table


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    """One POST of a callback: the HTTP status it got (None when no answer came) or why it failed."""

    delivery_id: str
    attempt: int
    image_id: str
    url: str
    attempted_at: dt.datetime
    status_code: int | None
    error: str | None
    delivered: bool


@dataclass(frozen=True, slots=True)
class DeliveryProgress:
    """How far one delivery got: attempts made, and whether one of them was delivered."""

    attempts: int
    delivered: bool


class CallbackAttempts:
    """Reads and writes the ``callback_attempts`` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def progress(self, delivery_id: str) -> DeliveryProgress:
        statement = select(func.count(), func.max(_T.c.delivered.cast(Integer))).where(_T.c.delivery_id == delivery_id)
        async with self._engine.connect() as connection:
            count, delivered = (await connection.execute(statement)).one()
        return DeliveryProgress(int(count), bool(delivered))

    async def record(self, attempt: CallbackAttempt) -> None:
        values = dataclasses.asdict(attempt)
        async with self._engine.begin() as connection:
            await connection.execute(_T.insert().values(values))

    async def of_images(self, image_ids: Sequence[str]) -> dict[str, list[CallbackAttempt]]:
        """Each image's attempts, oldest first (images without any are absent)."""
        if not image_ids:
            return {}
        statement = select(_T).where(_T.c.image_id.in_(list(image_ids))).order_by(_T.c.attempted_at, _T.c.attempt)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).mappings().all()
        attempts: dict[str, list[CallbackAttempt]] = {}
        for row in rows:
            values = dict(row)
            if values["attempted_at"].tzinfo is None:  # SQLite keeps no zone; the value was written in UTC
                values["attempted_at"] = values["attempted_at"].replace(tzinfo=dt.UTC)
            attempts.setdefault(row["image_id"], []).append(CallbackAttempt(**values))
        return attempts
