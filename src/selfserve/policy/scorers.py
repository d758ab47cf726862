"""Stateless scorers over snapshot features, each returning values in [0, 1] (higher is
better). The framework clamps and weights them.

Freshness of what each reads: *own* features (in-flight, queued prefill tokens, decode
tokens, prefix hits from the router's index, recent TTFT) are instant; *scraped* ones
(waiting queue, KV usage) are as of the last scrape (50 ms in the simulator by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfserve.policy.framework import Scorer, require
from selfserve.policy.snapshot import ClusterSnapshot


def _inverse_minmax(values: Sequence[float]) -> list[float]:
    """(max - v) / (max - min); every candidate gets 1.0 when all are equal (llm-d)."""
    hi, lo = max(values), min(values)
    if hi == lo:
        return [1.0] * len(values)
    span = hi - lo
    return [(hi - v) / span for v in values]


@dataclass(slots=True)
class QueueScorer(Scorer):
    """`queue`: inverse min-max of the engine's waiting queue (scraped).

    (maxQ - q) / (maxQ - minQ) over candidates, 1.0 for all when equal.
    Source: llm-d `scorer/queuedepth` (queue-scorer).
    """

    type_name = "queue"

    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> list[float]:
        reps = snapshot.replicas
        return _inverse_minmax([reps[i].num_requests_waiting for i in candidates])


@dataclass(slots=True)
class KVCacheUtilizationScorer(Scorer):
    """`kv-cache-utilization`: 1 - KV usage fraction (scraped).

    Source: llm-d `scorer/kvcacheutilization`.
    """

    type_name = "kv-cache-utilization"

    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> list[float]:
        reps = snapshot.replicas
        return [1.0 - reps[i].kv_cache_usage for i in candidates]


@dataclass(slots=True)
class PrefixHitScorer(Scorer):
    """`prefix-hit`: prefix_hit_tokens / total prompt tokens (own index, instant).

    The router's own per-replica LRU of block hashes from its past decisions; the
    contiguous-prefix variant of llm-d's approximate prefix score.
    """

    type_name = "prefix-hit"

    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> list[float]:
        total = snapshot.request.total_prompt_tokens
        reps = snapshot.replicas
        if total <= 0:
            return [0.0] * len(candidates)
        return [reps[i].prefix_hit_tokens / total for i in candidates]


@dataclass(slots=True)
class LoadAwareScorer(Scorer):
    """`load-aware`: q == 0 → 0.5, else 0.5 * (1 - min(q, threshold) / threshold).

    q = waiting queue (scraped). Parameter `threshold` (default 128). Source: llm-d
    `scorer/loadaware`.
    """

    type_name = "load-aware"
    threshold: int = 128

    def validate(self) -> None:
        require(self.threshold > 0, "threshold", "an integer > 0", self.threshold)

    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> list[float]:
        t = self.threshold
        out = []
        for i in candidates:
            q = snapshot.replicas[i].num_requests_waiting
            out.append(0.5 if q == 0 else 0.5 * (1.0 - min(q, t) / t))
        return out


@dataclass(slots=True)
class ActiveRequestScorer(Scorer):
    """`active-request`: count ≤ idle_threshold → 1.0, else (max - c) / max * max_busy_score.

    c = in-flight requests (own). Parameters `idle_threshold` (0), `max_busy_score` (1.0).
    Source: llm-d `scorer/activerequest`.
    """

    type_name = "active-request"
    idle_threshold: int = 0
    max_busy_score: float = 1.0

    def validate(self) -> None:
        require(self.idle_threshold >= 0, "idle_threshold", "an integer >= 0", self.idle_threshold)
        require(
            0 <= self.max_busy_score <= 1,
            "max_busy_score",
            "a number in [0, 1]",
            self.max_busy_score,
        )

    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> list[float]:
        counts = [snapshot.replicas[i].in_flight_requests for i in candidates]
        top = max(counts)
        out = []
        for c in counts:
            if c <= self.idle_threshold or top == 0:
                out.append(1.0)
            else:
                out.append((top - c) / top * self.max_busy_score)
        return out


@dataclass(slots=True)
class InFlightScorer(Scorer):
    """`in-flight`: inverse min-max of in-flight requests (own, instant)."""

    type_name = "in-flight"

    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> list[float]:
        reps = snapshot.replicas
        return _inverse_minmax([reps[i].in_flight_requests for i in candidates])


@dataclass(slots=True)
class QueuedPrefillTokensScorer(Scorer):
    """`queued-prefill-tokens`: inverse min-max of (queued prefill tokens + this request's
    uncached tokens on the replica) — own, instant; the work ahead of this request's first
    token."""

    type_name = "queued-prefill-tokens"

    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> list[float]:
        reps = snapshot.replicas
        total = snapshot.request.total_prompt_tokens
        return _inverse_minmax(
            [
                reps[i].queued_prefill_tokens + max(0, total - reps[i].prefix_hit_tokens)
                for i in candidates
            ]
        )


@dataclass(slots=True)
class DecodeTokensScorer(Scorer):
    """`decode-tokens`: inverse min-max of running decode tokens (own, instant)."""

    type_name = "decode-tokens"

    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> list[float]:
        reps = snapshot.replicas
        return _inverse_minmax([reps[i].running_decode_tokens for i in candidates])


@dataclass(slots=True)
class RecentTTFTScorer(Scorer):
    """`recent-ttft`: inverse min-max of the mean of the last 10 TTFTs (own)."""

    type_name = "recent-ttft"

    def score(self, snapshot: ClusterSnapshot, candidates: tuple[int, ...]) -> list[float]:
        reps = snapshot.replicas
        return _inverse_minmax([reps[i].recent_ttft_s for i in candidates])
