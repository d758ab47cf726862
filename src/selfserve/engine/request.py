"""`EngineRequest`: one request inside one replica's engine, with its scheduling state.

The immutable part (prompt and output sizes, prefix hashes, media) comes from the trace;
the mutable part (tokens computed, tokens emitted, KV held, timings) is what the scheduler
and the block ledger update. The prompt's prefix-cache layout is precomputed once into
*units*: a unit is a run of whole engine blocks named by one chained hash (one trace block
of 512 or 64 tokens, or one media item), so prefix lookups and KV bookkeeping cost one
dict operation per trace block instead of one per 16-token engine block.

Layout of the prefill sequence: [full text blocks][media items][text remainder], then the
generated tokens. Media items are chained after the shared text prefix, so a repeated
image after the same prefix hits the cache (its content hash is part of the chain).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from selfserve.engine.blocks import CachedUnit, hash_units
from selfserve.workload.hashing import combine

WAITING = 0
RUNNING = 1
FINISHED = 2
ABORTED = 3
NO_UNIT = 1 << 62  # `next_unit_end_tokens` when every unit is held


@dataclass(slots=True)
class EngineRequest:
    """A request as an engine sees it (contract C).

    `block_hashes` are chained prefix hashes of `hash_block_tokens`-token blocks (0 means
    the engine's block size); `media_hashes` name media items whose token counts are
    `media_part_tokens` (when empty, `media_tokens` is split evenly across the hashes).
    """

    request_id: str
    prompt_tokens: int
    output_tokens: int
    block_hashes: tuple[int, ...] = ()
    media_tokens: int = 0
    media_hashes: tuple[int, ...] = ()
    arrival_s: float = 0.0
    hash_block_tokens: int = 0
    media_part_tokens: tuple[int, ...] = ()
    media_kinds: tuple[str, ...] = ()  # "image" | "audio" | "video" per media item
    # --- scheduling state (engine-owned) ---
    status: int = WAITING
    num_computed_tokens: int = 0
    num_emitted_tokens: int = 0
    num_cached_tokens: int = -1  # prefix-cache hit at first admission; -1 = never admitted
    num_preemptions: int = 0
    first_token_s: float = -1.0
    finish_s: float = -1.0
    # prefix-cache layout, set by `prepare` (empty tuples until then: no list to build
    # for each of the simulator's requests only to be replaced)
    unit_hashes: Sequence[int] = ()
    unit_end_tokens: Sequence[int] = ()
    unit_end_blocks: Sequence[int] = ()
    # KV held: cached units (hits and registered) + private ("plain") blocks
    held_units: list[CachedUnit] = field(default_factory=list)
    plain_blocks: int = 0
    held_blocks: int = 0
    next_unit: int = 0  # first unit not yet held
    next_unit_end_tokens: int = NO_UNIT  # computed tokens that complete it (see `unit_end`)
    media_first_unit: int = 0  # index of the first media unit in `unit_hashes`
    prompt_total: int = 0  # text + media prompt tokens (set by `prepare`)
    units_end_tokens: int = 0  # tokens covered by all units (set by `prepare`)
    units_end_blocks: int = 0  # blocks of all units (set by `prepare`)

    @property
    def total_prompt_tokens(self) -> int:
        return self.prompt_tokens + self.media_tokens

    @property
    def num_tokens(self) -> int:
        """Tokens whose KV the next step needs: the prompt plus tokens emitted so far."""
        return self.prompt_total + self.num_emitted_tokens

    @property
    def is_prefilling(self) -> bool:
        # decoding = one token emitted per step with all earlier tokens already in KV
        return (
            self.num_emitted_tokens == 0
            or self.num_computed_tokens < self.prompt_total + self.num_emitted_tokens - 1
        )

    def prepare(self, block_size: int) -> None:
        """Build the unit layout for an engine with `block_size`-token blocks."""
        self.prompt_total = self.prompt_tokens + self.media_tokens
        if not self.block_hashes and not self.media_hashes:
            self._set_layout((), (), ())
            return
        hash_block_tokens = self.hash_block_tokens or block_size
        if hash_block_tokens > 0 and hash_block_tokens % block_size == 0:  # as `hash_units`
            units, unit_tokens = self.block_hashes, hash_block_tokens
        else:
            units, unit_tokens = hash_units(self.block_hashes, hash_block_tokens, block_size)
        n_text = min(len(units), self.prompt_tokens // unit_tokens) if unit_tokens else 0
        blocks_per_unit = unit_tokens // block_size if unit_tokens else 0
        self.media_first_unit = n_text
        if not self.media_hashes:
            # text only: the ends are arithmetic progressions, kept as ranges (indexable
            # and bisectable like lists, without building two lists per request)
            if n_text:  # then unit_tokens and blocks_per_unit are > 0
                ends_range = range(unit_tokens, unit_tokens * n_text + 1, unit_tokens)
                blocks_range = range(blocks_per_unit, blocks_per_unit * n_text + 1, blocks_per_unit)
                self._set_layout(units[:n_text], ends_range, blocks_range)
            else:
                self._set_layout((), (), ())
            return
        hashes = list(units[:n_text])
        if n_text:
            ends = list(range(unit_tokens, unit_tokens * n_text + 1, unit_tokens))
            end_blocks = list(range(blocks_per_unit, blocks_per_unit * n_text + 1, blocks_per_unit))
        else:
            ends, end_blocks = [], []
        parts = self.media_part_tokens or _split_evenly(self.media_tokens, len(self.media_hashes))
        parent = hashes[-1] if hashes else 0
        end = ends[-1] if ends else 0
        end_block = end_blocks[-1] if end_blocks else 0
        for content_hash, tokens in zip(self.media_hashes, parts, strict=True):
            if tokens <= 0:
                continue
            parent = combine(combine(parent, content_hash), tokens)
            end += tokens
            item_blocks = -(-tokens // block_size)
            end_block += item_blocks
            hashes.append(parent)
            ends.append(end)
            end_blocks.append(end_block)
        self._set_layout(hashes, ends, end_blocks)

    def _set_layout(
        self, hashes: Sequence[int], ends: Sequence[int], end_blocks: Sequence[int]
    ) -> None:
        self.unit_hashes = hashes
        self.unit_end_tokens = ends
        self.unit_end_blocks = end_blocks
        self.units_end_tokens = ends[-1] if ends else 0
        self.units_end_blocks = end_blocks[-1] if end_blocks else 0
        self.next_unit_end_tokens = ends[0] if ends else NO_UNIT

    def unit_end(self, k: int) -> int:
        """Tokens that complete unit `k` (NO_UNIT past the last): the scheduler compares
        it with the computed tokens to see, in one test, whether a unit just completed."""
        ends = self.unit_end_tokens
        return ends[k] if k < len(ends) else NO_UNIT

    def blocks_for(self, num_tokens: int, block_size: int) -> int:
        """KV blocks needed to hold the first `num_tokens` tokens of this request."""
        if num_tokens >= self.units_end_tokens:  # past every unit (also: no units)
            return self.units_end_blocks + -(-(num_tokens - self.units_end_tokens) // block_size)
        ends = self.unit_end_tokens
        k = bisect_right(ends, num_tokens)
        if k == 0:
            return -(-num_tokens // block_size)
        return self.unit_end_blocks[k - 1] + -(-(num_tokens - ends[k - 1]) // block_size)


def _split_evenly(total: int, parts: int) -> tuple[int, ...]:
    base, extra = divmod(total, parts)
    return tuple(base + (1 if i < extra else 0) for i in range(parts))
