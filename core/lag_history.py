"""The workers' lag over the last minutes, for the admin pages' chart: a small ring buffer of samples.

Kafka keeps no history of a group's lag, so the API samples it while someone looks: the sampler starts on the
first request that wants the history and stops by itself once nobody asked for a whole window, so an API that
nobody looks at sends no extra requests to Kafka. Each API process keeps its own history.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ConfigDict

from core.clients import KafkaUnavailable
from core.consumer_group import GroupOverview

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 10.0
WINDOW_S = 15 * 60.0


class LagSample(BaseModel):
    """The group's lag at one moment: in total and per partition of the main topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: dt.datetime
    total_lag: int
    lag_by_partition: dict[int, int]

    @classmethod
    def of(cls, overview: GroupOverview) -> LagSample:
        return cls(
            at=overview.read_at,
            total_lag=overview.total_lag,
            lag_by_partition={row.partition: row.lag for row in overview.partitions},
        )


class LagHistory:
    """Lag samples of the last ``window_s``, one every ``interval_s``, taken by ``sample`` in a background task.

    :meth:`ensure_running` starts the task (the admin routes call it); it ends by itself once nobody called
    :meth:`ensure_running` for ``window_s`` (then awaits ``on_idle``), and :meth:`stop` ends it at shutdown.
    """

    def __init__(
        self,
        sample: Callable[[], Awaitable[GroupOverview]],
        *,
        on_idle: Callable[[], Awaitable[None]] | None = None,
        interval_s: float = SAMPLE_INTERVAL_S,
        window_s: float = WINDOW_S,
    ) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._sample = sample
        self._on_idle = on_idle
        self._samples: deque[LagSample] = deque(maxlen=math.ceil(window_s / interval_s))
        self._task: asyncio.Task[None] | None = None
        self._wanted_at = -math.inf
        self._sampled_at = -math.inf
        self._failing = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def record(self, overview: GroupOverview) -> None:
        """Keep ``overview``'s lag (a route that read the group anyway saves the sampler a request)."""
        self._samples.append(LagSample.of(overview))
        self._sampled_at = time.monotonic()

    def samples(self) -> list[LagSample]:
        """The samples of the last ``window_s``, oldest first (older ones are from before the sampler idled)."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.window_s)
        return [sample for sample in self._samples if sample.at >= cutoff]

    def ensure_running(self) -> None:
        """Start sampling if it is not under way, and keep it going for another ``window_s``."""
        self._wanted_at = time.monotonic()
        if not self.running:
            self._task = asyncio.create_task(self._run(), name="lag history sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while time.monotonic() - self._wanted_at <= self.window_s:
            wait_s = self._sampled_at + self.interval_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # the sampling period, not synchronisation
                continue
            try:
                self.record(await self._sample())
                self._failing = False
            except KafkaUnavailable as exc:
                # One line per outage: the sampler keeps trying every interval_s.
                if not self._failing:
                    logger.warning("lag history: no sample: %s", exc)
                self._failing = True
                self._sampled_at = time.monotonic()
            except Exception:
                logger.exception("lag history: sampling failed")
                self._sampled_at = time.monotonic()
        logger.info("lag history: nobody asked for %.0f s; sampling stops until the next request", self.window_s)
        if self._on_idle is not None:
            await self._on_idle()  # e.g. the reader's connections: nobody looking means no requests
