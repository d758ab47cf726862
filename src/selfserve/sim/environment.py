"""`Environment`: the one owner of simulated time, the event heap and the seeded RNG.

Events are ordered by `(time, priority, seq)`: equal times resolve by priority (arrivals
before engine steps, replicas by index), then by insertion order, so two runs with one
seed process identical event sequences.
"""

from __future__ import annotations

import heapq
import random
from typing import Any


class Environment:
    """Clock + event heap + RNG for one simulation run."""

    __slots__ = ("now_s", "rng", "_heap", "_seq")

    def __init__(self, seed: int = 0) -> None:
        self.now_s = 0.0
        self.rng = random.Random(seed)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0

    def schedule(self, time_s: float, priority: int, payload: Any) -> None:
        if time_s < self.now_s:
            raise ValueError(f"cannot schedule at {time_s} s, before now ({self.now_s} s)")
        heapq.heappush(self._heap, (time_s, priority, self._seq, payload))
        self._seq += 1

    def pop(self) -> tuple[float, int, Any]:
        """The next event as (time_s, priority, payload); advances the clock."""
        time_s, priority, _, payload = heapq.heappop(self._heap)
        self.now_s = time_s
        return time_s, priority, payload

    def peek_time_s(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
