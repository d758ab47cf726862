"""Filters: narrow the candidate replicas before scoring. A filter that would leave no
candidate is skipped by `ProfilePolicy`, so a healthy replica is always chosen."""

from __future__ import annotations

from dataclasses import dataclass

from selfserve.policy.framework import Filter, require
from selfserve.policy.snapshot import ClusterSnapshot


@dataclass(slots=True)
class FreshMetricsFilter(Filter):
    """`fresh-metrics`: keep replicas whose scraped metrics are at most `max_age_s` old
    (default 2.0 s, llm-d's staleness threshold). Reads: metrics_age_s (scraped)."""

    type_name = "fresh-metrics"
    max_age_s: float = 2.0

    def validate(self) -> None:
        require(self.max_age_s > 0, "max_age_s", "a number > 0", self.max_age_s)

    def filter(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> tuple[int, ...]:
        reps = snapshot.replicas
        return tuple(i for i in candidates if reps[i].metrics_age_s <= self.max_age_s)


@dataclass(slots=True)
class PrefixAffinityFilter(Filter):
    """`prefix-affinity`: keep the "sticky" replicas whose expected prefix hit covers at
    least `threshold` (0.80) of the prompt. Reads: prefix_hit_tokens (own index).

    After llm-d's prefix-cache-affinity filter, without its 1% random exploration and its
    predicted-latency escape (filters get no RNG here; pair it with a load scorer instead).
    """

    type_name = "prefix-affinity"
    threshold: float = 0.8

    def validate(self) -> None:
        require(0 <= self.threshold <= 1, "threshold", "a number in [0, 1]", self.threshold)

    def filter(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> tuple[int, ...]:
        total = snapshot.request.total_prompt_tokens
        if total <= 0:
            return candidates
        reps = snapshot.replicas
        return tuple(i for i in candidates if reps[i].prefix_hit_tokens >= self.threshold * total)


@dataclass(slots=True)
class QueueLimitFilter(Filter):
    """`queue-limit`: keep replicas with fewer than `max_in_flight` requests in flight
    (default 256, vLLM's max_num_seqs). Reads: in_flight_requests (own)."""

    type_name = "queue-limit"
    max_in_flight: int = 256

    def validate(self) -> None:
        require(self.max_in_flight > 0, "max_in_flight", "an integer > 0", self.max_in_flight)

    def filter(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> tuple[int, ...]:
        reps = snapshot.replicas
        return tuple(i for i in candidates if reps[i].in_flight_requests < self.max_in_flight)
