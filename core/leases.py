"""Leader election through the database: a named lease that one process holds until it lapses.

Taking and renewing are one conditional upsert (``INSERT ... ON CONFLICT DO UPDATE ... WHERE``), so the database
decides between processes that try at once, on SQLite and PostgreSQL alike: the row is written only when it is
new, already ours, or lapsed, and ``RETURNING`` says whether it was. Expiry is compared with the caller's clock:
the clocks of the processes sharing a lease must agree to well within its duration (NTP does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import bindparam, delete, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from core.tables import leases_table


class Lease:
    """The lease ``name`` as ``holder`` tries to hold it for ``duration_s`` at a time."""

    def __init__(
        self,
        engine: AsyncEngine,
        name: str,
        holder: str,
        duration_s: float,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._engine = engine
        self.name = name
        self.holder = holder
        self._duration = dt.timedelta(seconds=duration_s)
        self._clock = clock
        insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(leases_table).values(
            name=bindparam("name"), holder=bindparam("holder"), expires_at=bindparam("expires_at")
        )
        self._take = insert.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": insert.excluded.holder, "expires_at": insert.excluded.expires_at},
            # Ours to renew, or lapsed: anyone may take it. Otherwise the row stays as it is and nothing returns.
            where=or_(leases_table.c.holder == insert.excluded.holder, leases_table.c.expires_at < bindparam("now")),
        ).returning(leases_table.c.holder)

    async def acquire(self) -> bool:
        """Take or renew the lease; True if this holder has it for the next ``duration_s``."""
        now = self._clock()
        values = {"name": self.name, "holder": self.holder, "expires_at": now + self._duration, "now": now}
        async with self._engine.begin() as connection:
            return (await connection.execute(self._take, values)).first() is not None

    async def release(self) -> None:
        """Give the lease up if held, so another process takes it at once rather than when it lapses."""
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(leases_table).where(leases_table.c.name == self.name, leases_table.c.holder == self.holder)
            )
