"""NVIDIA Dynamo KV router: per-worker cost of prefill work left after cache credit plus
projected active KV blocks, argmin (or softmax with a temperature).

Source: ai-dynamo/dynamo `lib/kv-router/src/scheduling/config.rs` (`KvRouterConfig::default`)
and `scheduling/selector/default.rs`; `shared/design/routing-anchors.md` §3. Dynamo's
default overlap index is exact, fed by engine KV events; the snapshot carries no KV events,
so this re-implements Dynamo's approximate mode (no KV events): an index of the router's
own decisions whose entries expire `ttl_s` (router_ttl_secs 120) after insertion. Active
prefill tokens and active blocks are tracked by the policy itself from its hooks exactly as
Dynamo's router does (added at routing, prefill removed at first token, blocks at completion).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from selfserve.policy.anchors_simple import AnchorPolicy
from selfserve.policy.framework import healthy_candidates, require
from selfserve.policy.prefix_index import BlockLRUIndex
from selfserve.policy.snapshot import ClusterSnapshot


@dataclass(slots=True)
class _Active:
    worker: int
    prefill_tokens: int
    hashes: tuple[int, ...]
    tail_blocks: int  # blocks past the hashed full blocks: unique to this sequence


@dataclass(slots=True)
class _Worker:
    prefill_tokens: int = 0
    block_refs: dict = field(default_factory=dict)  # hash -> active sequences using it
    tail_blocks: int = 0

    @property
    def active_blocks(self) -> int:
        return len(self.block_refs) + self.tail_blocks


@dataclass(slots=True)
class DynamoKVPolicy(AnchorPolicy):
    """`dynamo-kv`: Dynamo KV router.

    overlap = longest run of the request's hashes in w's index (blocks);
    prefill = max(0, (ISL + active_prefill_tokens[w]) / block_size - overlap_score_credit × overlap);
    decode  = active blocks on w if the request were added (shared prefix blocks counted once);
    cost[w] = prefill_load_scale × prefill + decode + decode_active_request_weight × active[w].
    temperature 0 → argmin, ties by the smallest index size then uniform random; else sample
    p ∝ exp(-(cost - min) / ((max - min) × temperature)).
    Defaults: overlap_score_credit 1.0, prefill_load_scale 1.0, temperature 0.0,
    decode_active_request_weight 0, ttl_s 120, max_index_blocks 2^20 (per worker here).
    Reads: request block hashes and prompt tokens; soft state as in the module docstring.
    """

    name = "dynamo-kv"
    replica_fields = frozenset()
    overlap_score_credit: float = 1.0
    prefill_load_scale: float = 1.0
    temperature: float = 0.0
    decode_active_request_weight: float = 0.0
    ttl_s: float = 120.0
    max_index_blocks: int = 2**20
    _index: BlockLRUIndex | None = field(default=None, repr=False)
    _workers: list = field(default_factory=list, repr=False)
    _active: dict = field(default_factory=dict, repr=False)

    def validate(self) -> None:
        require(
            self.overlap_score_credit >= 0,
            "overlap_score_credit",
            "a number >= 0",
            self.overlap_score_credit,
        )
        require(
            self.prefill_load_scale >= 0,
            "prefill_load_scale",
            "a number >= 0",
            self.prefill_load_scale,
        )
        require(self.temperature >= 0, "temperature", "a number >= 0", self.temperature)
        require(
            self.decode_active_request_weight >= 0,
            "decode_active_request_weight",
            "a number >= 0",
            self.decode_active_request_weight,
        )
        require(self.ttl_s > 0, "ttl_s", "a number > 0", self.ttl_s)
        require(
            self.max_index_blocks > 0, "max_index_blocks", "an integer > 0", self.max_index_blocks
        )

    def _overlap(self, worker: int, hashes: tuple[int, ...], cutoff_s: float) -> int:
        if self._index is None:
            return 0
        od = self._index.held[worker]
        n = 0
        for h in hashes:
            t = od.get(h)
            if t is None or t < cutoff_s:
                break
            n += 1
        return n

    def costs(self, snapshot: ClusterSnapshot, cands: tuple[int, ...]) -> list[float]:
        req = snapshot.request
        bs = max(1, req.block_size)
        isl = req.total_prompt_tokens
        hashes = req.block_hashes
        req_blocks = max(len(hashes), math.ceil(isl / bs))
        tail = req_blocks - len(hashes)
        cutoff = snapshot.now_s - self.ttl_s
        out = []
        for w in cands:
            state = self._workers[w] if self._workers else _Worker()
            overlap = self._overlap(w, hashes, cutoff)
            prefill = max(
                0.0, (isl + state.prefill_tokens) / bs - self.overlap_score_credit * overlap
            )
            # blocks of this request not yet active on the worker; map/sum counts in C
            # (this runs per worker per decision)
            new_blocks = tail + len(hashes) - sum(map(state.block_refs.__contains__, hashes))
            decode = state.active_blocks + new_blocks
            active = (
                sum(1 for a in self._active.values() if a.worker == w)
                if self.decode_active_request_weight
                else 0
            )
            out.append(
                self.prefill_load_scale * prefill
                + decode
                + self.decode_active_request_weight * active
            )
        return out

    def choose(self, snapshot: ClusterSnapshot, rng: random.Random) -> int:
        cands = healthy_candidates(snapshot)
        if len(cands) == 1:
            return cands[0]
        costs = self.costs(snapshot, cands)
        lo, hi = min(costs), max(costs)
        if self.temperature == 0 or hi == lo:
            if self.temperature > 0:
                return cands[rng.randrange(len(cands))]
            ties = [w for w, c in zip(cands, costs, strict=True) if c == lo]
            if len(ties) > 1 and self._index is not None:
                smallest = min(self._index.size_blocks(w) for w in ties)
                ties = [w for w in ties if self._index.size_blocks(w) == smallest]
            return ties[0] if len(ties) == 1 else ties[rng.randrange(len(ties))]
        span = (hi - lo) * self.temperature
        weights = [math.exp(-(c - lo) / span) for c in costs]
        return rng.choices(cands, weights=weights, k=1)[0]

    def on_route(self, snapshot: ClusterSnapshot, replica_index: int) -> None:
        req = snapshot.request
        n = len(snapshot.replicas)
        if not self._workers:
            self._workers = [_Worker() for _ in range(n)]
            self._index = BlockLRUIndex([self.max_index_blocks] * n)
        bs = max(1, req.block_size)
        isl = req.total_prompt_tokens
        overlap = self._overlap(replica_index, req.block_hashes, snapshot.now_s - self.ttl_s)
        new_tokens = max(0, isl - overlap * bs)  # router_assume_kv_reuse
        tail = max(0, math.ceil(isl / bs) - len(req.block_hashes))
        active = _Active(replica_index, new_tokens, req.block_hashes, tail)
        self._active[req.request_id] = active
        w = self._workers[replica_index]
        w.prefill_tokens += new_tokens
        w.tail_blocks += tail
        refs = w.block_refs
        for h in req.block_hashes:
            refs[h] = refs.get(h, 0) + 1
        if req.block_hashes:
            self._index.insert(replica_index, req.block_hashes, snapshot.now_s)

    def on_first_token(self, request_id: str, replica_index: int, now_s: float) -> None:
        active = self._active.get(request_id)
        if active is not None and active.prefill_tokens:
            self._workers[active.worker].prefill_tokens -= active.prefill_tokens
            active.prefill_tokens = 0

    def on_complete(self, request_id: str, replica_index: int, now_s: float, ok: bool) -> None:
        active = self._active.pop(request_id, None)
        if active is None:
            return
        w = self._workers[active.worker]
        w.prefill_tokens -= active.prefill_tokens
        w.tail_blocks -= active.tail_blocks
        refs = w.block_refs
        for h in active.hashes:
            left = refs[h] - 1
            if left:
                refs[h] = left
            else:
                del refs[h]
