"""The vLLM-v1 scheduler of one replica: which requests run in the next step, and how many
tokens each, under the sequence cap, the token budget and the KV cache.

Order of decisions, as in vllm/v1/core/sched/scheduler.py: running requests first (in
admission order; a prefill continues in chunks), allocating KV for each; when KV runs out
the most recently admitted running request is preempted (its KV freed, recomputed later
from scratch) and put back at the head of the waiting queue. Then, only if nothing was
preempted, waiting requests are admitted FCFS while sequences, budget and KV allow, each
starting from its longest cached prefix. `update` applies a step's results: tokens
computed, units named in the prefix cache, tokens emitted, requests finished.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from selfserve.engine.blocks import BlockLedger, CachedUnit
from selfserve.engine.config import EngineConfig
from selfserve.engine.request import FINISHED, RUNNING, WAITING, EngineRequest


@dataclass(slots=True)
class Batch:
    """What one step runs: (request, new tokens) pairs plus the perf model's inputs."""

    scheduled: list[tuple[EngineRequest, int]] = field(default_factory=list)
    prefill: list[tuple[int, int]] = field(default_factory=list)  # (new, cached before)
    decode_contexts: list[int] = field(default_factory=list)
    preempted: list[EngineRequest] = field(default_factory=list)
    encoder_tokens: list[tuple[str, int]] = field(default_factory=list)  # (kind, tokens)
    num_admitted: int = 0


class Scheduler:
    """Continuous batching with chunked prefill, prefix caching and preemption."""

    __slots__ = (
        "config",
        "ledger",
        "waiting",
        "running",
        "encoder_cache",
        "encoder_cache_tokens",
        "encoder_capacity_tokens",
        "has_encoder",
        "prefix_queries_tokens",
        "prefix_hits_tokens",
        "num_preemptions",
        "prompt_tokens_computed",
        "generation_tokens",
        "num_mid_prefill",
    )

    def __init__(self, config: EngineConfig, num_blocks: int, has_encoder: bool) -> None:
        self.config = config
        self.ledger = BlockLedger(num_blocks)
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        # vLLM sizes the encoder cache to the token budget (at least one item).
        self.encoder_cache: OrderedDict[int, int] = OrderedDict()
        self.encoder_cache_tokens = 0
        self.encoder_capacity_tokens = config.max_num_batched_tokens
        self.has_encoder = has_encoder
        self.prefix_queries_tokens = 0
        self.prefix_hits_tokens = 0
        self.num_preemptions = 0
        self.prompt_tokens_computed = 0
        self.generation_tokens = 0
        self.num_mid_prefill = 0  # requests the last `update` left with prompt still to do

    # ---- deciding -----------------------------------------------------------------------
    def schedule(self) -> Batch:
        config = self.config
        block_size = config.block_size
        ledger = self.ledger
        running = self.running
        batch = Batch()
        scheduled = batch.scheduled
        prefill = batch.prefill
        decode_contexts = batch.decode_contexts
        budget = config.max_num_batched_tokens
        scheduled_append = scheduled.append
        decode_append = decode_contexts.append
        prefill_append = prefill.append
        i = 0
        num_running = len(running)
        while i < num_running and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            emitted = req.num_emitted_tokens
            num_new = req.prompt_total + emitted - computed
            is_decode = num_new == 1 and emitted > 0
            if num_new > budget:
                num_new = budget
            total = computed + num_new
            units_end_tokens = req.units_end_tokens
            if total >= units_end_tokens:
                need = (
                    req.units_end_blocks
                    + (total - units_end_tokens + block_size - 1) // block_size
                    - req.held_blocks
                )
            else:
                need = req.blocks_for(total, block_size) - req.held_blocks
            if need > 0:
                if need > ledger.num_free_blocks and not self._make_room(req, need, batch):
                    break
                ledger.allocate(need)
                req.plain_blocks += need
                req.held_blocks += need
                num_running = len(running)
            scheduled_append((req, num_new))
            if is_decode:
                decode_append(computed + 1)
            else:
                prefill_append((num_new, computed))
            budget -= num_new
            i += 1
        if not batch.preempted and self.waiting:
            self._admit(batch, budget)
        return batch

    def _make_room(self, req: EngineRequest, need: int, batch: Batch) -> bool:
        """Preempt the most recently admitted running requests until `need` blocks are
        free; False when `req` itself had to go (it then waits at the queue head)."""
        running = self.running
        while need > self.ledger.num_free_blocks:
            victim = running.pop()
            self._preempt(victim)
            batch.preempted.append(victim)
            if victim is req:
                return False
        return True

    def _admit(self, batch: Batch, budget: int) -> int:
        config = self.config
        block_size = config.block_size
        ledger = self.ledger
        waiting = self.waiting
        running = self.running
        caching = config.enable_prefix_caching
        while waiting and budget > 0 and len(running) < config.max_num_seqs:
            req = waiting[0]
            num_tokens = req.num_tokens
            hits = 0
            hit_free_blocks = 0
            hit_units: list[CachedUnit] = []
            units = req.unit_hashes
            if caching and units:
                # vLLM recomputes at least the last token, so a hit stops before it
                last_unit = bisect_left(req.unit_end_tokens, num_tokens)
                cached = ledger.units
                while hits < last_unit:
                    unit = cached.get(units[hits])
                    if unit is None:
                        break
                    if unit.refs == 0:  # free cached blocks the hit takes off the queue
                        hit_free_blocks += unit.blocks
                    hit_units.append(unit)
                    hits += 1
            cached_tokens = req.unit_end_tokens[hits - 1] if hits else 0
            hit_blocks = req.unit_end_blocks[hits - 1] if hits else 0
            num_new = num_tokens - cached_tokens
            if num_new > budget:
                if not config.enable_chunked_prefill:
                    break
                num_new = budget
            need = req.blocks_for(cached_tokens + num_new, block_size) - hit_blocks
            if need + hit_free_blocks > ledger.num_free_blocks:
                break
            waiting.popleft()
            if hits:  # reference the hit units
                for unit in hit_units:
                    ledger.acquire_unit(unit)
                req.held_units.extend(hit_units)
            ledger.allocate(need)
            req.plain_blocks = need
            req.held_blocks = hit_blocks + need
            req.next_unit = hits
            req.next_unit_end_tokens = req.unit_end(hits)
            req.num_computed_tokens = cached_tokens
            req.status = RUNNING
            if req.num_cached_tokens < 0:
                req.num_cached_tokens = cached_tokens
                if self.has_encoder and req.media_hashes:
                    self._encode_missing(req, hits, batch.encoder_tokens)
            self.prefix_queries_tokens += num_tokens
            self.prefix_hits_tokens += cached_tokens
            running.append(req)
            batch.scheduled.append((req, num_new))
            batch.prefill.append((num_new, cached_tokens))
            batch.num_admitted += 1
            budget -= num_new
        return budget

    def _encode_missing(self, req: EngineRequest, hits: int, out: list[tuple[str, int]]) -> None:
        """Append (kind, tokens) the encoder must run for `req`; prefix hits and items in
        the encoder cache (LRU by content hash, sized to the token budget) skip it."""
        cache = self.encoder_cache
        kinds = req.media_kinds or ("image",) * len(req.media_hashes)
        j = 0
        for content_hash, item_tokens, kind in zip(
            req.media_hashes, _media_parts(req), kinds, strict=True
        ):
            if item_tokens <= 0:
                continue
            unit = req.media_first_unit + j
            j += 1
            if unit < hits:
                continue  # its KV is already cached: no encoder input needed
            if content_hash in cache:
                cache.move_to_end(content_hash)
                continue
            out.append((kind, item_tokens))
            cache[content_hash] = item_tokens
            self.encoder_cache_tokens += item_tokens
            while self.encoder_cache_tokens > self.encoder_capacity_tokens and len(cache) > 1:
                _, old = cache.popitem(last=False)
                self.encoder_cache_tokens -= old

    def _preempt(self, req: EngineRequest) -> None:
        """Recompute-style preemption: free the KV, restart the request later."""
        self.ledger.release_units(req.held_units, req.plain_blocks)
        req.held_units = []
        req.plain_blocks = 0
        req.held_blocks = 0
        req.next_unit = 0
        req.next_unit_end_tokens = req.unit_end(0)
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        req.status = WAITING
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    # ---- applying a step's results ----------------------------------------------------------
    def update(
        self, batch: Batch, end_s: float
    ) -> tuple[list[EngineRequest], list[EngineRequest], list[EngineRequest]]:
        """Apply `batch`; returns (first-token, token-emitting, finished) requests."""
        caching = self.config.enable_prefix_caching
        first: list[EngineRequest] = []
        emitted_reqs: list[EngineRequest] = []
        finished: list[EngineRequest] = []
        prompt_computed = 0
        mid_prefill = 0
        # locals: this loop runs once per scheduled request per step (the engine's hot path)
        first_append = first.append
        emitted_append = emitted_reqs.append
        for req, num_new in batch.scheduled:
            computed_before = req.num_computed_tokens
            emitted = req.num_emitted_tokens
            num_tokens = req.prompt_total + emitted
            if emitted == 0 or computed_before < num_tokens - 1:
                prompt_computed += num_new
            computed = computed_before + num_new
            req.num_computed_tokens = computed
            if caching and computed >= req.next_unit_end_tokens:
                k = req.next_unit
                self._register_units(req, k, bisect_right(req.unit_end_tokens, computed, k))
            if computed == num_tokens:
                emitted += 1
                req.num_emitted_tokens = emitted
                emitted_append(req)
                if req.first_token_s < 0:
                    req.first_token_s = end_s
                    first_append(req)
                if emitted >= req.output_tokens:
                    finished.append(req)
            else:
                mid_prefill += 1
        self.num_mid_prefill = mid_prefill
        self.prompt_tokens_computed += prompt_computed
        self.generation_tokens += len(emitted_reqs)
        if finished:
            for req in finished:
                self._finish(req, end_s)
            self.running = [r for r in self.running if r.status == RUNNING]
        return first, emitted_reqs, finished

    def _register_units(self, req: EngineRequest, k: int, k_end: int) -> None:
        """Name units k..k_end-1 of `req`, now computed, in the prefix cache.

        A unit another request cached meanwhile stays private to `req`, as in vLLM.
        """
        ledger = self.ledger
        held = req.held_units
        hashes = req.unit_hashes
        end_blocks = req.unit_end_blocks
        req.next_unit = k_end
        req.next_unit_end_tokens = req.unit_end(k_end)
        blocks_before = end_blocks[k - 1] if k else 0
        for j in range(k, k_end):
            end = end_blocks[j]
            unit = ledger.register_unit(hashes[j], end - blocks_before)
            if unit is not None:
                held.append(unit)
                req.plain_blocks -= end - blocks_before
            blocks_before = end

    def _finish(self, req: EngineRequest, end_s: float) -> None:
        self.ledger.release_units(req.held_units, req.plain_blocks)
        req.held_units = []
        req.plain_blocks = 0
        req.held_blocks = 0
        req.status = FINISHED
        req.finish_s = end_s


def _media_parts(req: EngineRequest) -> tuple[int, ...]:
    if req.media_part_tokens:
        return req.media_part_tokens
    base, extra = divmod(req.media_tokens, len(req.media_hashes))
    return tuple(base + (1 if i < extra else 0) for i in range(len(req.media_hashes)))
