"""Prefix-affinity anchors with load gates: SGLang `cache_aware`, AIBrix `prefix-cache`,
Ray Serve `PrefixCacheAffinityRouter`.

Their originals index prompt *text*: SGLang and Ray keep character-level radix trees,
AIBrix hashes 4-byte blocks. Requests here carry no text, only chained token-block hashes,
so each tree is re-expressed over block hashes (a radix tree over a chained-hash sequence
is a map from hash to holders) and "characters matched / characters in the prompt" becomes
"tokens in matched blocks / prompt tokens". Load is the router's own in-flight count
(instant), as in all three originals. Rules paraphrased in `shared/design/routing-anchors.md`
§2 (SGLang), §5 (AIBrix), §6 (Ray).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field

from selfserve.policy.anchors_simple import AnchorPolicy
from selfserve.policy.framework import argmin_first, argmin_random, healthy_candidates, require
from selfserve.policy.prefix_index import BlockLRUIndex
from selfserve.policy.snapshot import ClusterSnapshot

CHARS_PER_TOKEN = 4  # the assumption llm-d and others make to turn characters into tokens


def _tenant_index(snapshot: ClusterSnapshot, capacity_blocks: int) -> BlockLRUIndex:
    return BlockLRUIndex([max(1, capacity_blocks)] * len(snapshot.replicas))


@dataclass(slots=True)
class SGLangCacheAwarePolicy(AnchorPolicy):
    """`sglang-cache-aware`: SGLang model gateway `cache_aware` with its CLI defaults.

    load = in-flight requests (own). imbalanced = max - min > balance_abs_threshold (64)
    and max > balance_rel_threshold (1.5) × min, over all workers. Imbalanced → least load
    among healthy (first index wins). Else match the request in the tree: rate = matched
    tokens / prompt tokens; rate > cache_threshold (0.3) → the tenant at the deepest matched
    node (the most recently used one when several hold it), else least load (current code;
    older sgl-router took the smallest tree). The request is then inserted under the choice.
    Tree size: max_tree_size_chars (2^26) per tenant, as tokens at 4 chars/token, kept as a
    per-tenant LRU (SGLang trims LRU leaves every 120 s; here on insert).
    Source: sgl-project/sglang `sgl-model-gateway/src/policies/cache_aware.rs`, `tree.rs`,
    `router_args.py`.
    """

    name = "sglang-cache-aware"
    replica_fields = frozenset({"in_flight_requests"})
    cache_threshold: float = 0.3
    balance_abs_threshold: int = 64
    balance_rel_threshold: float = 1.5
    max_tree_size_chars: int = 2**26
    _tree: BlockLRUIndex | None = field(default=None, repr=False)

    def validate(self) -> None:
        require(
            0 <= self.cache_threshold <= 1,
            "cache_threshold",
            "a number in [0, 1]",
            self.cache_threshold,
        )
        require(
            self.balance_abs_threshold >= 0,
            "balance_abs_threshold",
            "an integer >= 0",
            self.balance_abs_threshold,
        )
        require(
            self.balance_rel_threshold >= 1,
            "balance_rel_threshold",
            "a number >= 1",
            self.balance_rel_threshold,
        )
        require(
            self.max_tree_size_chars > 0,
            "max_tree_size_chars",
            "an integer > 0",
            self.max_tree_size_chars,
        )

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        reps = snapshot.replicas
        loads_all = [r.in_flight_requests for r in reps]
        cands = healthy_candidates(snapshot)
        loads = [loads_all[i] for i in cands]
        lo, hi = min(loads_all), max(loads_all)
        if hi - lo > self.balance_abs_threshold and hi > self.balance_rel_threshold * lo:
            return argmin_first(cands, loads)
        req = snapshot.request
        if self._tree is not None and req.block_hashes and req.prompt_tokens > 0:
            tenant, matched_blocks = self._deepest_tenant(req.block_hashes, cands)
            rate = min(req.prompt_tokens, matched_blocks * req.block_size) / req.prompt_tokens
            if tenant is not None and rate > self.cache_threshold:
                return tenant
        return argmin_first(cands, loads)

    def _deepest_tenant(
        self, hashes: tuple[int, ...], cands: tuple[int, ...]
    ) -> tuple[int | None, int]:
        held = self._tree.held
        depth = self._tree.run_length(hashes, cands)
        if not depth:
            return None, 0
        h = hashes[depth - 1]
        last_holders = [i for i in cands if h in held[i]]
        tenant = max(last_holders, key=lambda i: held[i][h])
        return tenant, depth

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        req = snapshot.request
        if not req.block_hashes:
            return
        if self._tree is None:
            cap = self.max_tree_size_chars // CHARS_PER_TOKEN // max(1, req.block_size)
            self._tree = _tenant_index(snapshot, cap)
        self._tree.insert(replica_index, req.block_hashes, snapshot.now_s)


@dataclass(slots=True)
class AIBrixPrefixCachePolicy(AnchorPolicy):
    """`aibrix-prefix-cache`: AIBrix gateway `prefix-cache`.

    running = in-flight (own). If max - min running > imbalance_abs_count (8): candidates =
    the pods with the minimum. matched[pod] = (i+1)·100 // n for the deepest block i of the
    global run (walk stops at the first hash in no entry) that pod holds. Matched pods are
    shuffled, sorted by match desc then running asc; the first with running ≤ mean +
    std_factor (1) × std over all ready pods wins. Otherwise the fewest running (random
    ties). The hashes are then added under the choice. Table: table_blocks (200,000) LRU
    entries, idle expiry idle_expiry_s (1200). Source: vllm-project/aibrix
    `pkg/plugins/gateway/algorithms/prefix_cache.go`, `pkg/utils/prefixcacheindexer/hash.go`.
    """

    name = "aibrix-prefix-cache"
    replica_fields = frozenset({"in_flight_requests"})
    imbalance_abs_count: int = 8
    std_factor: float = 1.0
    table_blocks: int = 200_000
    idle_expiry_s: float = 1200.0
    _table: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def validate(self) -> None:
        require(
            self.imbalance_abs_count >= 0,
            "imbalance_abs_count",
            "an integer >= 0",
            self.imbalance_abs_count,
        )
        require(self.std_factor >= 0, "std_factor", "a number >= 0", self.std_factor)
        require(self.table_blocks > 0, "table_blocks", "an integer > 0", self.table_blocks)
        require(self.idle_expiry_s > 0, "idle_expiry_s", "a number > 0", self.idle_expiry_s)

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        reps = snapshot.replicas
        ready = healthy_candidates(snapshot)
        running = {i: reps[i].in_flight_requests for i in ready}
        cands = ready
        lo, hi = min(running.values()), max(running.values())
        if hi - lo > self.imbalance_abs_count:
            cands = tuple(i for i in ready if running[i] == lo)
        hashes = snapshot.request.block_hashes
        matched: dict[int, int] = {}
        n = len(hashes)
        cutoff = snapshot.now_s - self.idle_expiry_s
        cand_set = set(cands)
        for k, h in enumerate(hashes):
            entry = self._table.get(h)
            if not entry:
                break
            pct = (k + 1) * 100 // n
            live = False
            for pod, t in entry.items():
                if t >= cutoff:
                    live = True
                    if pod in cand_set:
                        matched[pod] = pct
            if not live:
                break
        if matched:
            pods = list(matched)
            rng.shuffle(pods)
            pods.sort(key=lambda p: (-matched[p], running[p]))
            vals = list(running.values())
            mean = sum(vals) / len(vals)
            std = (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5
            for p in pods:
                if running[p] <= mean + self.std_factor * std:
                    return p
        return argmin_random(cands, [running[i] for i in cands], rng)

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        now = snapshot.now_s
        table = self._table
        for h in snapshot.request.block_hashes:
            entry = table.get(h)
            if entry is None:
                table[h] = {replica_index: now}
            else:
                entry[replica_index] = now
                table.move_to_end(h)
        while len(table) > self.table_blocks:
            table.popitem(last=False)
        cutoff = now - self.idle_expiry_s
        while table:  # LRU order = last-access order, so idle entries sit at the front
            h, entry = next(iter(table.items()))
            if max(entry.values()) >= cutoff:
                break
            del table[h]


@dataclass(slots=True)
class RayPrefixAffinityPolicy(AnchorPolicy):
    """`ray-prefix-affinity`: Ray Serve LLM `PrefixCacheAffinityRouter` with its defaults.

    qlen = in-flight (own; Ray probes and caches replica queue lengths). If max - min qlen
    > imbalanced_threshold (10): power-of-two fallback (2 random replicas, shorter queue,
    first on a tie). Else match the tree: rate = matched tokens / prompt tokens; rate <
    match_rate_threshold (0.1) → the tenants with the fewest cached blocks, else the
    tenants with the longest match; among them the shortest queue (random ties). Insert
    after routing; no eviction (do_eviction=False). Source: ray-project/ray
    `python/ray/llm/_internal/serve/routing_policies/prefix_aware/prefix_aware_router.py`.
    """

    name = "ray-prefix-affinity"
    replica_fields = frozenset({"in_flight_requests"})
    imbalanced_threshold: int = 10
    match_rate_threshold: float = 0.1
    _tree: BlockLRUIndex | None = field(default=None, repr=False)

    def validate(self) -> None:
        require(
            self.imbalanced_threshold >= 0,
            "imbalanced_threshold",
            "an integer >= 0",
            self.imbalanced_threshold,
        )
        require(
            0 <= self.match_rate_threshold <= 1,
            "match_rate_threshold",
            "a number in [0, 1]",
            self.match_rate_threshold,
        )

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        reps = snapshot.replicas
        cands = healthy_candidates(snapshot)
        qlen = [reps[i].in_flight_requests for i in cands]
        if len(cands) > 1 and max(qlen) - min(qlen) > self.imbalanced_threshold:
            a, b = rng.sample(cands, 2)
            return b if reps[b].in_flight_requests < reps[a].in_flight_requests else a
        req = snapshot.request
        chosen: tuple[int, ...] = cands
        if self._tree is not None:
            held = self._tree.held
            depth = {i: self._tree.contiguous_match(i, req.block_hashes) for i in cands}
            best = max(depth.values())
            rate = (
                min(req.prompt_tokens, best * req.block_size) / req.prompt_tokens
                if req.prompt_tokens
                else 0.0
            )
            if rate < self.match_rate_threshold:
                fewest = min(len(held[i]) for i in cands)
                chosen = tuple(i for i in cands if len(held[i]) == fewest)
            else:
                chosen = tuple(i for i in cands if depth[i] == best)
        return argmin_random(chosen, [reps[i].in_flight_requests for i in chosen], rng)

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        req = snapshot.request
        if not req.block_hashes:
            return
        if self._tree is None:
            self._tree = _tenant_index(snapshot, 1 << 62)  # no eviction by default
        self._tree.insert(replica_index, req.block_hashes, snapshot.now_s)
