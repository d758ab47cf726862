"""How much prefill the tuner left on the table: measured prefix-cache hits vs the limit.

A router decides only which replica's cache a request meets. With every replica's KV
memory pooled into one cache, Belady's MIN bounds the prompt tokens any router's requests
find cached, and LRU shows what a router as cache-efficient as one shared LRU cache would
get (`selfserve.workload.prefix_reuse.cache_headroom`). Comparing those with the hit rate a
policy reaches at its capacity says whether a better router could still save much prefill
(Mooncake conversation on 6xh200: lmetric 13.8 %, pooled LRU 20.3 %, MIN 34.7 %).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from selfserve.tune.objective import Evaluation
from selfserve.workload.prefix_reuse import CacheHeadroom, cache_headroom


@dataclass(frozen=True, slots=True)
class PrefillHeadroom:
    window: str  # which workload the figures are for ("validate")
    pooled: CacheHeadroom
    hit_rates: Mapping[str, float]  # policy label -> prefix hit rate at its capacity

    def prefill_cut(self, label: str, limit_hit_rate: float) -> float:
        """The fraction of `label`'s prefill tokens a router reaching `limit_hit_rate`
        would not compute (0 when the policy already does as well)."""
        hit = self.hit_rates.get(label, math.nan)
        if not math.isfinite(hit) or hit >= 1.0:
            return math.nan
        return max(0.0, 1.0 - (1.0 - limit_hit_rate) / (1.0 - hit))

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            **self.pooled.to_dict(),
            "hit_rates": dict(self.hit_rates),
        }

    def note(self, winner: str, anchor: str) -> str:
        rates = ", ".join(
            f"{label} {100 * self.hit_rates[label]:.1f}%"
            for label in dict.fromkeys((winner, anchor))
            if label in self.hit_rates
        )
        lru, limit = self.pooled.lru_token_hit_rate, self.pooled.optimal_token_hit_rate
        return (
            f"prefix cache on the {self.window} window at capacity: {rates} of prompt tokens "
            f"found cached; with the cluster's {self.pooled.capacity_tokens:,} KV tokens pooled, "
            f"LRU finds {100 * lru:.1f}% and Belady's MIN {100 * limit:.1f}% (no router finds "
            f"more): a router as cache-efficient as one shared LRU cache would prefill "
            f"{100 * self.prefill_cut(winner, lru):.1f}% less than {winner}, and none can "
            f"prefill more than {100 * self.prefill_cut(winner, limit):.1f}% less"
        )


def prefill_headroom(
    workload, capacity_tokens: int, evaluations: Mapping[str, Evaluation], window: str
) -> PrefillHeadroom | None:
    """The pooled-cache bound on `workload` and each evaluation's hit rate at its capacity;
    None when the workload has no prefix hashes or no evaluation reports a hit rate."""
    pooled = cache_headroom(list(workload.requests), capacity_tokens)
    if pooled is None:
        return None
    hit_rates = {}
    for label, evaluation in evaluations.items():
        value = evaluation.summary_at_capacity().get("prefix_hit_rate")
        if isinstance(value, (int, float)) and math.isfinite(value):
            hit_rates[label] = float(value)
    if not hit_rates:
        return None
    return PrefillHeadroom(window, pooled, hit_rates)
