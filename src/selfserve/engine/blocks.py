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

# A cached unit's entry packs its reference count and its size into one int, so that
# referencing, freeing and evicting a unit each cost one dict operation.
ONE_REF = 1 << 24  # entry = refs * ONE_REF + blocks (a unit never spans 2^24 blocks)


class BlockLedger:
    """Counts of free and held KV blocks plus the cached prefix units."""

    __slots__ = (
        "num_blocks",
        "num_free_blocks",
        "free_queue",
        "units",
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
        self.units: dict[int, int] = {}  # unit hash -> refs * ONE_REF + blocks
        self.num_evicted_units = 0
        self._next_plain_key = -2

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        """vLLM's kv_cache_usage_perc: 1 - free/total (cached free blocks count as free)."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    @property
    def cached_blocks(self) -> dict[int, int]:
        """Unit hash -> blocks in the unit, for every cached unit (a copy, for inspection)."""
        return {h: entry % ONE_REF for h, entry in self.units.items()}

    @property
    def cached_refs(self) -> dict[int, int]:
        """Unit hash -> requests holding it, for every cached unit (a copy)."""
        return {h: entry // ONE_REF for h, entry in self.units.items()}

    def is_cached(self, unit_hash: int) -> bool:
        return unit_hash in self.units

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
        units = self.units
        units_before = len(units)
        need = num_blocks
        while True:
            key, blocks = popitem(False)
            if key >= 0:  # a cached unit: evict its hash
                del units[key]
            if blocks >= need:
                if blocks > need:
                    rest_key = self._next_plain_key
                    self._next_plain_key = rest_key - 1
                    queue[rest_key] = blocks - need
                    queue.move_to_end(rest_key, last=False)
                break
            need -= blocks
        self.num_evicted_units += units_before - len(units)

    def acquire(self, unit_hash: int) -> int:
        """Reference a cached unit (a prefix hit); returns its block count."""
        entry = self.units[unit_hash]
        if entry < ONE_REF:  # free: leave the queue
            del self.free_queue[unit_hash]
            self.num_free_blocks -= entry
        self.units[unit_hash] = entry + ONE_REF
        return entry % ONE_REF

    def register(self, unit_hash: int, blocks: int) -> bool:
        """Name `blocks` private blocks of a running request as a cached unit.

        Returns False when the hash is already cached (another request computed the same
        prefix meanwhile): the caller's copy then stays private, as in vLLM.
        """
        if unit_hash in self.units:
            return False
        self.units[unit_hash] = ONE_REF + blocks
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
        entries = self.units
        freed = 0
        for unit_hash in reversed(units):
            entry = entries[unit_hash] - ONE_REF
            entries[unit_hash] = entry
            if entry < ONE_REF:  # no holder left: the unit joins the queue (still cached)
                queue[unit_hash] = entry
                freed += entry
        self.num_free_blocks += freed

    def check(self) -> None:
        """Assert the ledger's invariants (used by tests)."""
        queued = sum(self.free_queue.values())
        assert queued == self.num_free_blocks, (queued, self.num_free_blocks)
        for key in self.free_queue:
            if key >= 0:
                assert self.units[key] < ONE_REF, key
        for unit_hash, entry in self.units.items():
            assert entry >= 0 and entry % ONE_REF > 0, (unit_hash, entry)
            assert (entry < ONE_REF) == (unit_hash in self.free_queue), unit_hash


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
