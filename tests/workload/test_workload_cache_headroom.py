"""The pooled-cache bound: Belady's MIN hits at least what LRU does, never more than an
infinite cache, and more memory never hurts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.workload.prefix_reuse import cache_headroom
from selfserve.workload.request import Request

BLOCK = 16


def _chain(prefix: tuple[int, ...], new: int, start: int) -> tuple[int, ...]:
    return prefix + tuple(range(start, start + new))


def test_a_scan_between_two_uses_evicts_under_lru_but_not_under_min():
    """A 4-block conversation, then 4 one-off requests of 2 blocks, then the conversation
    again: a 4-block cache keeps it only if it knows the one-offs never come back."""
    convo = Request("c1", 0.0, 4 * BLOCK, 1, (1, 2, 3, 4), BLOCK)
    scans = [
        Request(f"s{i}", 1.0 + i, 2 * BLOCK, 1, (100 + 2 * i, 101 + 2 * i), BLOCK) for i in range(4)
    ]
    again = Request("c2", 9.0, 6 * BLOCK, 1, (1, 2, 3, 4, 5, 6), BLOCK)
    headroom = cache_headroom([convo, *scans, again], 4 * BLOCK)
    assert headroom is not None and headroom.capacity_blocks == 4
    total = 4 * BLOCK + 4 * 2 * BLOCK + 6 * BLOCK
    assert headroom.lru_token_hit_rate == 0.0
    assert headroom.optimal_token_hit_rate == 4 * BLOCK / total
    assert headroom.infinite_token_hit_rate == 4 * BLOCK / total


def test_no_hashes_means_no_answer():
    assert cache_headroom([Request("a", 0.0, 100, 1)], 10_000) is None


requests_strategy = st.lists(
    st.tuples(st.integers(0, 5), st.integers(1, 4), st.integers(1, BLOCK)),
    min_size=1,
    max_size=40,
)


def _workload(spec: list[tuple[int, int, int]]) -> list[Request]:
    """Each request extends one of a few earlier prompts (or starts afresh) by new blocks;
    the last block may be partial."""
    prompts: list[tuple[int, ...]] = [()]
    out, next_hash = [], 1
    for i, (parent, new, last_tokens) in enumerate(spec):
        base = prompts[parent % len(prompts)]
        hashes = _chain(base, new, next_hash)
        next_hash += new
        prompts.append(hashes)
        tokens = (len(hashes) - 1) * BLOCK + last_tokens
        out.append(Request(str(i), float(i), tokens, 1, hashes, BLOCK))
    return out


@settings(max_examples=150, deadline=None)
@given(requests_strategy, st.integers(0, 30))
def test_min_bounds_lru_and_infinite_bounds_min(spec, capacity_blocks):
    requests = _workload(spec)
    small = cache_headroom(requests, capacity_blocks * BLOCK)
    large = cache_headroom(requests, (capacity_blocks + 3) * BLOCK)
    assert small is not None and large is not None
    eps = 1e-12
    assert small.lru_token_hit_rate <= small.optimal_token_hit_rate + eps
    assert small.optimal_token_hit_rate <= small.infinite_token_hit_rate + eps
    assert small.optimal_token_hit_rate <= large.optimal_token_hit_rate + eps
    assert small.lru_token_hit_rate <= large.lru_token_hit_rate + eps
    distinct = len({h for r in requests for h in r.block_hashes})
    everything = cache_headroom(requests, distinct * BLOCK)
    assert everything.optimal_token_hit_rate == everything.lru_token_hit_rate
    assert everything.optimal_token_hit_rate == everything.infinite_token_hit_rate
