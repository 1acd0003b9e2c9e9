"""Per-key rate limits (the ``limits`` library, a moving window in this process's memory): 429 with Retry-After.

The window is per API process: N processes behind a balancer let a key make up to N times ``RATE_LIMIT``.
"""

from __future__ import annotations

import math
import time

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class RateLimiter:
    """Counts each key's requests against one rate, e.g. ``50/second``."""

    def __init__(self, rate: str) -> None:
        self._rate = limits.parse(rate)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after_s(self, key_id: str) -> int | None:
        """Count a request of ``key_id``: None if it is within the rate, else whole seconds until one would be."""
        if self._limiter.hit(self._rate, key_id):
            return None
        reset_at = self._limiter.get_window_stats(self._rate, key_id).reset_time
        return max(1, math.ceil(reset_at - time.time()))
