"""vLLM production-stack `prefixaware` and `session`, LiteLLM `latency-based-routing`, and
LMetric.

production-stack keeps a hash trie of 128-character prompt chunks; requests here carry no
text, so the trie is re-expressed over the request's chained token-block hashes (one block
per chunk). Sources: vllm-project/production-stack `src/vllm_router/routers/routing_logic.py`
and `prefix/hashtrie.py`; BerriAI/litellm `router_strategy/lowest_latency.py`; see
`shared/design/routing-anchors.md` §4 and §7.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections import deque
from dataclasses import dataclass, field

from selfserve.policy.anchors_simple import AnchorPolicy
from selfserve.policy.framework import argmin_first, argmin_random, healthy_candidates, require
from selfserve.policy.snapshot import ClusterSnapshot


def qps_route(snapshot: ClusterSnapshot, cands: tuple[int, ...]) -> int:
    """production-stack's fallback: the first endpoint with no request stats in the window,
    else the lowest QPS over the window (own, 60 s sliding window; first wins ties)."""
    reps = snapshot.replicas
    for i in cands:
        if reps[i].recent_requests_per_s == 0:
            return i
    return argmin_first(cands, [reps[i].recent_requests_per_s for i in cands])


@dataclass(slots=True)
class ProductionStackPrefixAwarePolicy(AnchorPolicy):
    """`prodstack-prefixaware`: walk the trie keeping the intersection of endpoint sets seen
    so far (starting from all available endpoints); stop when the next node is missing or
    the intersection would become empty; pick uniformly among what is left. The request's
    hashes are then inserted under the choice; the trie is never evicted. The
    `prefix_min_match_length` gate (default 0, in blocks here) sends shorter matches to
    `qps_route`. Reads: request.block_hashes, recent_requests_per_s (own).
    """

    name = "prodstack-prefixaware"
    replica_fields = frozenset({"recent_requests_per_s"})
    prefix_min_match_length: int = 0
    _trie: dict = field(default_factory=dict, repr=False)  # hash -> set of replica indexes

    def validate(self) -> None:
        require(
            self.prefix_min_match_length >= 0,
            "prefix_min_match_length",
            "an integer >= 0",
            self.prefix_min_match_length,
        )

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        cands = healthy_candidates(snapshot)
        current = set(cands)
        depth = 0
        for h in snapshot.request.block_hashes:
            eps = self._trie.get(h)
            if not eps:
                break
            inter = current & eps
            if not inter:
                break
            current = inter
            depth += 1
        if depth < self.prefix_min_match_length:
            return qps_route(snapshot, cands)
        pool = sorted(current)
        return pool[rng.randrange(len(pool))]

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        trie = self._trie
        for h in snapshot.request.block_hashes:
            eps = trie.get(h)
            if eps is None:
                trie[h] = {replica_index}
            else:
                eps.add(replica_index)


@dataclass(slots=True)
class ProductionStackSessionPolicy(AnchorPolicy):
    """`prodstack-session`: session id → consistent-hash ring over the endpoint names
    (ketama: 40 md5 digests × 4 points per endpoint = 160, as `uhashring` builds it);
    requests without a session go to `qps_route`. The ring is rebuilt only when the set of
    healthy endpoints changes (a pure cache, not decision state). Reads: request.session_id,
    replica names, recent_requests_per_s.
    """

    name = "prodstack-session"
    replica_fields = frozenset({"recent_requests_per_s"})
    _ring_key: tuple = field(default=(), repr=False)
    _ring_points: list = field(default_factory=list, repr=False)
    _ring_owner: list = field(default_factory=list, repr=False)

    def _ring(self, snapshot: ClusterSnapshot, cands: tuple[int, ...]) -> None:
        key = tuple((i, snapshot.replicas[i].name) for i in cands)
        if key == self._ring_key:
            return
        points = []
        for i, name in key:
            for k in range(40):
                d = hashlib.md5(f"{name}-{k}".encode()).digest()
                for j in range(4):
                    points.append((int.from_bytes(d[4 * j : 4 * j + 4], "little"), i))
        points.sort()
        self._ring_key = key
        self._ring_points = [p for p, _ in points]
        self._ring_owner = [i for _, i in points]

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        cands = healthy_candidates(snapshot)
        sid = snapshot.request.session_id
        if sid is None:
            return qps_route(snapshot, cands)
        self._ring(snapshot, cands)
        h = int.from_bytes(hashlib.md5(sid.encode()).digest()[:4], "little")
        k = bisect.bisect(self._ring_points, h) % len(self._ring_points)
        return self._ring_owner[k]


@dataclass(slots=True)
class LiteLLMLatencyPolicy(AnchorPolicy):
    """`litellm-latency`: LiteLLM `latency-based-routing` for streaming requests.

    latency[w] = mean of the last `samples` (10) TTFTs observed on w within `ttl_s`
    (3600); a deployment with no data counts 0 (looks fastest). Pick uniformly among
    deployments with latency ≤ (1 + lowest_latency_buffer (0)) × min. Soft state: per
    replica TTFT samples from the first-token hook.
    """

    name = "litellm-latency"
    replica_fields = frozenset()
    samples: int = 10
    ttl_s: float = 3600.0
    lowest_latency_buffer: float = 0.0
    _sent: dict = field(default_factory=dict, repr=False)  # request_id -> dispatch time
    _ttfts: dict = field(default_factory=dict, repr=False)  # replica -> deque[(t, ttft)]

    def validate(self) -> None:
        require(self.samples > 0, "samples", "an integer > 0", self.samples)
        require(self.ttl_s > 0, "ttl_s", "a number > 0", self.ttl_s)
        require(
            self.lowest_latency_buffer >= 0,
            "lowest_latency_buffer",
            "a number >= 0",
            self.lowest_latency_buffer,
        )

    def latency_s(self, replica: int, now_s: float) -> float:
        window = self._ttfts.get(replica)
        if not window:
            return 0.0
        cutoff = now_s - self.ttl_s
        total, n = 0.0, 0
        for t, v in window:
            if t >= cutoff:
                total += v
                n += 1
        return total / n if n else 0.0

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        cands = healthy_candidates(snapshot)
        lat = [self.latency_s(i, snapshot.now_s) for i in cands]
        limit = min(lat) * (1.0 + self.lowest_latency_buffer)
        pool = [i for i, v in zip(cands, lat, strict=True) if v <= limit]
        return pool[0] if len(pool) == 1 else pool[rng.randrange(len(pool))]

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        self._sent[snapshot.request.request_id] = snapshot.now_s

    def on_first_token(self, request_id: str, replica_index: int, now_s: float) -> None:
        sent = self._sent.pop(request_id, None)
        if sent is None:
            return
        window = self._ttfts.get(replica_index)
        if window is None:
            window = self._ttfts[replica_index] = deque(maxlen=self.samples)
        window.append((now_s, now_s - sent))

    def on_complete(self, request_id: str, replica_index: int, now_s: float, ok: bool) -> None:
        self._sent.pop(request_id, None)


@dataclass(slots=True)
class LMetricPolicy(AnchorPolicy):
    """`lmetric`: minimise (new prefill tokens) × (batch size) per replica.

    new prefill tokens[w] = queued_prefill_tokens[w] + this request's uncached tokens on w
    (prompt - prefix_hit_tokens); batch size[w] = in-flight requests + 1 (the request
    joins). Random tie-break. All features own (instant). Source: the LMetric rule as
    restated in the issue ("new prefill tokens × batch size"), the basis of SGLang gateway's
    `lmetric` policy [unverified against its code].
    """

    name = "lmetric"
    replica_fields = frozenset({"queued_prefill_tokens", "prefix_hit_tokens", "in_flight_requests"})

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        reps = snapshot.replicas
        cands = healthy_candidates(snapshot)
        total = snapshot.request.total_prompt_tokens
        keys = []
        for i in cands:
            r = reps[i]
            new_tokens = r.queued_prefill_tokens + max(0, total - r.prefix_hit_tokens)
            keys.append(new_tokens * (r.in_flight_requests + 1))
        return argmin_random(cands, keys, rng)
