"""Which offset of a partition may be committed while records finish out of order.

Records of one partition run concurrently (different keys) and finish in any order. Kafka stores one number
per partition: the next offset to read. Committing past a record that is still running would lose it on a
crash, so the committable offset is the lowest offset still unfinished, or one past the highest finished
offset when nothing is pending. (Faust once committed the highest finished offset and lost work this way.)
"""

from __future__ import annotations

import heapq


class PartitionOffsets:
    """Offsets of one partition that were handed out and are not finished yet."""

    def __init__(self) -> None:
        self._pending: list[int] = []  # a min-heap of started, unfinished offsets
        self._finished: set[int] = set()  # finished, but behind a pending lower offset
        self._next_offset: int | None = None  # one past the highest offset handed out
        self.committed: int | None = None  # the last offset acknowledged by the broker

    def __len__(self) -> int:
        """How many records of this partition are still unfinished."""
        return len(self._pending) - len(self._finished)

    def started(self, offset: int) -> None:
        heapq.heappush(self._pending, offset)
        self._next_offset = max(self._next_offset or 0, offset + 1)

    def passed(self, position: int) -> None:
        """The consumer's position moved to ``position`` past offsets that hold no record for us: the markers that
        end transactions. Without this, a partition written in transactions never looks fully committed."""
        self._next_offset = max(self._next_offset or 0, position)

    def finished(self, offset: int) -> None:
        self._finished.add(offset)
        while self._pending and self._pending[0] in self._finished:
            self._finished.discard(heapq.heappop(self._pending))

    def committable(self) -> int | None:
        """The offset to commit now (the next one to read), or ``None`` if nothing new is safe to commit."""
        if self._next_offset is None:
            return None
        offset = self._pending[0] if self._pending else self._next_offset
        if self.committed is not None and offset <= self.committed:
            return None
        return offset
