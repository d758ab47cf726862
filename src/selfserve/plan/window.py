"""A representative slice of a long trace, so each of a plan's many simulations stays short.

A plan runs tens of simulations per option. For a long trace it sizes fleets on the
busiest contiguous stretch of `max_requests` requests — the shortest span holding that
many arrivals — because a fleet that meets the SLO there meets it on the calmer rest too
(the rest of the trace is reported, not silently dropped: the plan states the window).
"""

from __future__ import annotations

from dataclasses import dataclass

from selfserve.workload.request import Workload


@dataclass(frozen=True, slots=True)
class WindowChoice:
    first_index: int
    num_requests: int
    start_s: float
    span_s: float
    of_requests: int  # the whole trace's request count

    @property
    def is_whole(self) -> bool:
        return self.num_requests == self.of_requests

    def describe(self) -> str:
        if self.is_whole:
            return f"whole trace ({self.num_requests:,} requests, {self.span_s:,.0f} s)"
        return (
            f"busiest window of {self.num_requests:,} of {self.of_requests:,} requests "
            f"({self.span_s:,.0f} s from t={self.start_s:,.0f} s)"
        )


def busiest_window(workload: Workload, max_requests: int) -> tuple[Workload, WindowChoice]:
    """The densest run of `max_requests` consecutive arrivals (the whole trace if shorter)."""
    if max_requests < 1:
        raise ValueError(f"max_requests must be ≥ 1, got {max_requests}")
    requests = workload.requests
    total = len(requests)
    if total <= max_requests:
        choice = WindowChoice(0, total, workload.start_s, workload.span_s, total)
        return workload, choice
    best_first = 0
    best_span = float("inf")
    for first in range(total - max_requests + 1):
        span = requests[first + max_requests - 1].arrival_s - requests[first].arrival_s
        if span < best_span:
            best_first, best_span = first, span
    chosen = requests[best_first : best_first + max_requests]
    window = Workload(
        requests=list(chosen),
        name=f"{workload.name}[busiest {max_requests}]",
        source=workload.source,
        block_size=workload.block_size,
        warnings=list(workload.warnings),
    )
    return window, WindowChoice(best_first, max_requests, chosen[0].arrival_s, best_span, total)
