"""The KV block ledger: paged KV capacity, the prefix cache and its LRU free queue.

Like vLLM v1's `BlockPool`/`KVCacheManager`, blocks are either held by running requests or
free; a free block may still carry a cached prefix hash, and allocation takes blocks from
the head of one free queue (least recently freed first), evicting any cached hash they
carry. Blocks are counted, not named: a cached *unit* (`CachedUnit`: one chained hash
covering several engine blocks) is one object, and the queue holds *runs* — a run of private
blocks, or the units that one release freed, in eviction order — so the ledger's cost per
request is one queue operation per release plus about one dict operation per trace block,
not one per 16-token engine block. Requests hold their units as objects, so referencing and
releasing a unit touch no dict at all.

A free unit taken off the queue by a prefix hit is not searched for in its run: it stops
naming that run (`serial`), and the run skips it when allocation reaches it.
Invariant (tested): held blocks + free blocks == total blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from math import gcd

from selfserve.workload.hashing import combine

# Runs keep the units hit since they were queued until allocation reaches them; past this
# many such stale entries (and more than the live ones) the queue is rebuilt without them.
COMPACT_AFTER_STALE = 1 << 16
EVICTED = -1  # `CachedUnit.serial` of a unit no longer cached


class CachedUnit:
    """A cached prefix unit: `blocks` engine blocks named by `unit_hash`, held by `refs`
    running requests; while free (`refs` 0) it is queued in the run numbered `serial`."""

    __slots__ = ("unit_hash", "blocks", "refs", "serial")

    def __init__(self, unit_hash: int, blocks: int) -> None:
        self.unit_hash = unit_hash
        self.blocks = blocks
        self.refs = 1  # registered by the request that computed it
        self.serial = 0


class FreeRun:
    """A run of the free queue: `blocks` private blocks (`serial` 0), or the cached units
    one release freed (`serial` > 0), evicted in list order from `start` on."""

    __slots__ = ("serial", "blocks", "units", "start")

    def __init__(self, serial: int, blocks: int, units: list[CachedUnit]) -> None:
        self.serial = serial
        self.blocks = blocks
        self.units = units
        self.start = 0


class BlockLedger:
    """Counts of free and held KV blocks plus the cached prefix units."""

    __slots__ = (
        "num_blocks",
        "num_free_blocks",
        "free_queue",
        "units",
        "num_evicted_units",
        "_next_serial",
        "_num_free_units",
        "_num_stale",
        "_compact_after_stale",
    )

    def __init__(self, num_blocks: int, compact_after_stale: int = COMPACT_AFTER_STALE) -> None:
        if num_blocks < 1:
            raise ValueError(f"a KV cache needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.num_free_blocks = num_blocks
        self.free_queue: deque[FreeRun] = deque([FreeRun(0, num_blocks, [])])
        self.units: dict[int, CachedUnit] = {}  # every cached unit, by hash
        self.num_evicted_units = 0
        self._next_serial = 1
        self._num_free_units = 0  # free (queued) cached units
        self._num_stale = 0  # entries in runs of units no longer queued there
        self._compact_after_stale = compact_after_stale

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
        return {h: unit.blocks for h, unit in self.units.items()}

    @property
    def cached_refs(self) -> dict[int, int]:
        """Unit hash -> requests holding it, for every cached unit (a copy)."""
        return {h: unit.refs for h, unit in self.units.items()}

    def is_cached(self, unit_hash: int) -> bool:
        return unit_hash in self.units

    def allocate(self, num_blocks: int) -> None:
        """Take `num_blocks` private blocks from the queue head (caller checked they fit)."""
        if num_blocks <= 0:
            return
        self.num_free_blocks -= num_blocks
        queue = self.free_queue
        # Most allocations are a few decode or chunk blocks cut from a private run at the
        # head: shrink it in place.
        head = queue[0]
        if head.serial == 0 and head.blocks > num_blocks:
            head.blocks -= num_blocks
            return
        cached = self.units
        need = num_blocks
        evicted = skipped = rest = 0
        while need > 0:
            run = queue[0]
            serial = run.serial
            if serial == 0:
                if run.blocks > need:
                    run.blocks -= need
                    break
                need -= run.blocks
                queue.popleft()
                continue
            units = run.units
            i, n = run.start, len(units)
            while i < n and need > 0:
                unit = units[i]
                i += 1
                if unit.serial != serial or unit.refs:
                    skipped += 1  # hit (and maybe queued again or evicted) since then
                    continue
                del cached[unit.unit_hash]  # evict: its blocks are reused
                unit.serial = EVICTED
                evicted += 1
                blocks = unit.blocks
                if blocks > need:
                    rest = blocks - need
                need -= blocks
            if i < n:
                run.start = i
            else:
                queue.popleft()
        if rest:  # the rest of the last unit's blocks stay free, private, at the head
            queue.appendleft(FreeRun(0, rest, []))
        self.num_evicted_units += evicted
        self._num_free_units -= evicted
        self._num_stale -= skipped

    def acquire(self, unit_hash: int) -> int:
        """Reference a cached unit by hash (a prefix hit); returns its block count."""
        unit = self.units[unit_hash]
        self.acquire_unit(unit)
        return unit.blocks

    def acquire_unit(self, unit: CachedUnit) -> None:
        """Reference a cached unit (a prefix hit)."""
        if unit.refs == 0:  # free: it leaves the queue (its run will skip it)
            self.num_free_blocks -= unit.blocks
            self._num_free_units -= 1
            self._num_stale += 1
        unit.refs += 1

    def register(self, unit_hash: int, blocks: int) -> bool:
        """Name `blocks` private blocks of a running request as a cached unit.

        Returns False when the hash is already cached (another request computed the same
        prefix meanwhile): the caller's copy then stays private, as in vLLM.
        """
        return self.register_unit(unit_hash, blocks) is not None

    def register_unit(self, unit_hash: int, blocks: int) -> CachedUnit | None:
        """`register`, returning the new unit (held once) or None."""
        units = self.units
        size = len(units)
        unit = units.setdefault(unit_hash, CachedUnit(unit_hash, blocks))
        return unit if len(units) > size else None

    def release(self, unit_hashes: Sequence[int], plain_blocks: int) -> None:
        """`release_units` for the units of these hashes."""
        units = self.units
        self.release_units([units[h] for h in unit_hashes], plain_blocks)

    def release_units(self, units: Sequence[CachedUnit], plain_blocks: int) -> None:
        """Free a request's KV: tail first (private blocks, then units last to first).

        Private blocks join a private run already at the queue tail: blocks are counted,
        not named, so the queue's block order is the same and allocation pops fewer runs.
        The units left without a holder join the queue as one run.
        """
        queue = self.free_queue
        if plain_blocks > 0:
            tail = queue[-1] if queue else None
            if tail is not None and tail.serial == 0:
                tail.blocks += plain_blocks
            else:
                queue.append(FreeRun(0, plain_blocks, []))
            self.num_free_blocks += plain_blocks
        if not units:
            return
        serial = self._next_serial
        freed: list[CachedUnit] = []
        freed_blocks = 0
        for unit in reversed(units):
            refs = unit.refs - 1
            unit.refs = refs
            if refs == 0:  # no holder left: the unit joins the queue (still cached)
                unit.serial = serial
                freed.append(unit)
                freed_blocks += unit.blocks
        if freed:
            queue.append(FreeRun(serial, 0, freed))
            self._next_serial = serial + 1
            self._num_free_units += len(freed)
            self.num_free_blocks += freed_blocks
            stale = self._num_stale
            if stale > self._compact_after_stale and stale > self._num_free_units:
                self._compact()

    def _compact(self) -> None:
        """Drop the entries of units no longer queued where a run lists them."""
        kept: deque[FreeRun] = deque()
        for run in self.free_queue:
            serial = run.serial
            if serial:
                run.units = [
                    u for u in run.units[run.start :] if u.serial == serial and u.refs == 0
                ]
                run.start = 0
                if not run.units:
                    continue
            kept.append(run)
        self.free_queue = kept
        self._num_stale = 0

    def queue_layout(self) -> list[tuple[int, int]]:
        """The free queue head first, as (unit hash, blocks) per queued cached unit and
        (-1, blocks) per private run (for tests and inspection)."""
        layout: list[tuple[int, int]] = []
        for run in self.free_queue:
            if run.serial == 0:
                layout.append((-1, run.blocks))
                continue
            for unit in run.units[run.start :]:
                if unit.serial == run.serial and unit.refs == 0:
                    layout.append((unit.unit_hash, unit.blocks))
        return layout

    def check(self) -> None:
        """Assert the ledger's invariants (used by tests)."""
        layout = self.queue_layout()
        queued = sum(blocks for _, blocks in layout)
        assert queued == self.num_free_blocks, (queued, self.num_free_blocks)
        queued_units = [h for h, _ in layout if h != -1]
        assert all(blocks > 0 for _, blocks in layout), layout
        free_units = {h for h, unit in self.units.items() if unit.refs == 0}
        assert len(queued_units) == len(free_units) == self._num_free_units
        assert set(queued_units) == free_units
        listed = sum(len(r.units) - r.start for r in self.free_queue if r.serial)
        assert listed - len(queued_units) == self._num_stale, (listed, self._num_stale)
        for unit_hash, unit in self.units.items():
            assert unit.unit_hash == unit_hash and unit.blocks > 0 and unit.refs >= 0


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
