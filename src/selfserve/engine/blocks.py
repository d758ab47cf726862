"""The KV block ledger: paged KV capacity, the prefix cache and its LRU free queue.

Like vLLM v1's `BlockPool`/`KVCacheManager`, blocks are either held by running requests or
free; a free block may still carry a cached prefix hash, and allocation takes blocks from
the head of one free queue (least recently freed first), evicting any cached hash they
carry. Blocks are counted, not named: the queue holds *segments* — a cached unit (one
chained hash covering several engine blocks) or a run of private blocks — so the ledger's
cost per request is one operation per trace block, not per 16-token engine block.
Invariant (tested): held blocks + free blocks == total blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from math import gcd

from selfserve.workload.hashing import combine


class BlockLedger:
    """Counts of free and held KV blocks plus the cached prefix units."""

    __slots__ = (
        "num_blocks",
        "num_free_blocks",
        "free_queue",
        "cached_refs",
        "cached_blocks",
        "num_evicted_units",
        "_next_plain_key",
    )

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"a KV cache needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.num_free_blocks = num_blocks
        # key -> blocks; keys >= 0 are cached unit hashes, keys < 0 runs of private blocks
        self.free_queue: OrderedDict[int, int] = OrderedDict({-1: num_blocks})
        self.cached_refs: dict[int, int] = {}  # unit hash -> requests holding it
        self.cached_blocks: dict[int, int] = {}  # unit hash -> blocks in the unit
        self.num_evicted_units = 0
        self._next_plain_key = -2

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        """vLLM's kv_cache_usage_perc: 1 - free/total (cached free blocks count as free)."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def is_cached(self, unit_hash: int) -> bool:
        return unit_hash in self.cached_blocks

    def allocate(self, num_blocks: int) -> None:
        """Take `num_blocks` private blocks from the queue head (caller checked they fit)."""
        if num_blocks <= 0:
            return
        self.num_free_blocks -= num_blocks
        queue = self.free_queue
        # Most allocations are a few decode or chunk blocks cut from a private run at the
        # head: shrink it in place (an OrderedDict value update keeps its position).
        key = next(iter(queue))
        if key < 0:
            blocks = queue[key]
            if blocks > num_blocks:
                queue[key] = blocks - num_blocks
                return
        popitem = queue.popitem
        cached_blocks = self.cached_blocks
        cached_refs = self.cached_refs
        need = num_blocks
        evicted = 0
        while True:
            key, blocks = popitem(False)
            if key >= 0:  # a cached unit: evict its hash
                del cached_blocks[key]
                del cached_refs[key]
                evicted += 1
            if blocks >= need:
                if blocks > need:
                    rest_key = self._next_plain_key
                    self._next_plain_key = rest_key - 1
                    queue[rest_key] = blocks - need
                    queue.move_to_end(rest_key, last=False)
                break
            need -= blocks
        self.num_evicted_units += evicted

    def acquire(self, unit_hash: int) -> int:
        """Reference a cached unit (a prefix hit); returns its block count."""
        refs = self.cached_refs[unit_hash]
        blocks = self.cached_blocks[unit_hash]
        if refs == 0:
            del self.free_queue[unit_hash]
            self.num_free_blocks -= blocks
        self.cached_refs[unit_hash] = refs + 1
        return blocks

    def register(self, unit_hash: int, blocks: int) -> bool:
        """Name `blocks` private blocks of a running request as a cached unit.

        Returns False when the hash is already cached (another request computed the same
        prefix meanwhile): the caller's copy then stays private, as in vLLM.
        """
        if unit_hash in self.cached_blocks:
            return False
        self.cached_blocks[unit_hash] = blocks
        self.cached_refs[unit_hash] = 1
        return True

    def release(self, units: Sequence[int], plain_blocks: int) -> None:
        """Free a request's KV: tail first (private blocks, then units last to first).

        Private blocks join a private run already at the queue tail: blocks are counted,
        not named, so the queue's block order is the same and allocation pops fewer runs.
        """
        queue = self.free_queue
        if plain_blocks > 0:
            tail = next(reversed(queue), 0) if queue else 0
            if tail < 0:
                queue[tail] += plain_blocks
            else:
                key = self._next_plain_key
                self._next_plain_key = key - 1
                queue[key] = plain_blocks
            self.num_free_blocks += plain_blocks
        refs = self.cached_refs
        cached_blocks = self.cached_blocks
        freed = 0
        for unit_hash in reversed(units):
            count = refs[unit_hash] - 1
            refs[unit_hash] = count
            if not count:
                blocks = cached_blocks[unit_hash]
                queue[unit_hash] = blocks
                freed += blocks
        self.num_free_blocks += freed

    def check(self) -> None:
        """Assert the ledger's invariants (used by tests)."""
        queued = sum(self.free_queue.values())
        assert queued == self.num_free_blocks, (queued, self.num_free_blocks)
        for key in self.free_queue:
            if key >= 0:
                assert self.cached_refs[key] == 0, key
        for unit_hash, refs in self.cached_refs.items():
            assert refs >= 0
            assert (refs == 0) == (unit_hash in self.free_queue), unit_hash


def hash_units(
    block_hashes: Sequence[int], hash_block_tokens: int, engine_block_size: int
) -> tuple[tuple[int, ...], int]:
    """Prefix units for an engine: (unit hashes, tokens per unit).

    A unit must be a whole number of engine blocks. Trace blocks that are already a
    multiple of the engine block (512 or 64 onto 16) are units as they are; smaller or
    misaligned trace blocks are grouped to the least common multiple, keeping the hash of
    the last trace block in each group (chained, so it names the whole prefix).
    """
    if not block_hashes or hash_block_tokens <= 0:
        return (), 0
    if hash_block_tokens % engine_block_size == 0:
        return tuple(block_hashes), hash_block_tokens
    unit = hash_block_tokens * engine_block_size // gcd(hash_block_tokens, engine_block_size)
    per_unit = unit // hash_block_tokens
    return tuple(block_hashes[per_unit - 1 :: per_unit]), unit


def rehash_blocks(block_hashes: Sequence[int], from_size: int, to_size: int) -> tuple[int, ...]:
    """Map chained hashes of `from_size`-token blocks onto `to_size`-token engine blocks.

    Engine block k covers tokens [0, (k+1)·to_size); it is named by the trace block that
    contains its last token: that trace block's own hash when the two end together, else
    a hash derived from it and the offset (the shorter prefix is only known equal when the
    whole trace block is). Engine blocks past the last trace block are dropped.
    """
    if from_size <= 0 or to_size <= 0:
        raise ValueError(f"block sizes must be positive, got {from_size} and {to_size}")
    out: list[int] = []
    total_tokens = len(block_hashes) * from_size
    end = to_size
    while end <= total_tokens:
        j = (end - 1) // from_size
        offset = end - j * from_size
        h = block_hashes[j]
        out.append(h if offset == from_size else combine(h, offset))
        end += to_size
    return tuple(out)
